"""``asqhw compare``: the POST vs POT vs integer MAC study (docs/results.md)."""

from pathlib import Path

from asqhw.errors import UserError
from golden.formats import INT_BITS, range_text

BUILD = Path("build")


def register(subparsers) -> None:
    """Add the comparison subcommand."""
    _register_compare(subparsers)


def _register_compare(subparsers):
    p = subparsers.add_parser(
        "compare", help="POST vs POT vs integer MACs on UP5K and ECP5: docs/results.md",
        description="Synthesize one PE x SIMD MAC array per multiplier (POST with a table per lane, POST "
        "with a private table per MAC, POT, uniform int in logic, uniform int on DSPs) at BITS 3 and 4 for "
        "the iCE40 UP5K and the ECP5-85F; measure LUT4 per MAC (Yosys, out of context), Fmax (nextpnr, "
        "median and minimum over seeds) and digits accuracy; write the table and a plot to docs/.",
    )
    p.add_argument("--pe", type=int, default=4, help="output channels of each MAC array (default 4)")
    p.add_argument("--simd", type=int, default=4, help="input channels of each MAC array (default 4)")
    p.add_argument("--bits", type=int, nargs="+", default=[3, 4],
                   help=f"weight and activation bits compared, each {range_text(INT_BITS)} (default 3 4)")
    p.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s", "generic"],
                   help="icebreaker, ulx3s and/or generic (technology-independent Yosys: gates per MAC)")
    p.add_argument("--designs", nargs="+", help="a subset of the designs (default: all); rows of earlier runs "
                   "for other designs and boards are kept in OUT/rows.json")
    p.add_argument("--seeds", type=int, default=3, help="nextpnr seeds per design for Fmax (default 3)")
    p.add_argument("--no-fmax", action="store_true", help="skip place and route (LUTs only)")
    p.add_argument("--no-accuracy", action="store_true", help="skip training the accuracy models")
    p.add_argument("--epochs", type=int, help="training epochs of the accuracy models (default: the recipe's)")
    p.add_argument("--out", type=Path, default=BUILD / "compare",
                   help="working folder: synthesis runs and rows.json (default build/compare)")
    p.add_argument("--docs", type=Path, default=Path("docs"),
                   help="where results.md and its plot are written (default docs)")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the page from the rows of the last run (OUT/rows.json), synthesizing nothing")
    p.set_defaults(handler=run_compare_cmd)


def run_compare_cmd(args) -> int:
    from hw.eda.boards import FPGA_BOARDS
    from studies.compare import run_compare
    from studies.results import write_results

    for board in args.boards:
        if board not in (*FPGA_BOARDS, "generic"):
            raise UserError(f"--boards {board!r}: choose from {', '.join(FPGA_BOARDS)}, generic")
    if args.render_only:
        from studies.compare import fill_accuracy, load_rows

        rows = load_rows(args.out / "rows.json")
        if not args.no_accuracy:
            fill_accuracy(rows, args.out / "train", args.epochs)
    else:
        from studies.compare import DESIGNS

        designs = tuple(args.designs or DESIGNS)
        for design in designs:
            if design not in DESIGNS:
                raise UserError(f"--designs {design!r}: choose from {', '.join(DESIGNS)}")
        rows = run_compare(args.out, bits_list=tuple(args.bits), boards=tuple(args.boards), pe=args.pe,
                           simd=args.simd, designs=designs, seeds=args.seeds, with_fmax=not args.no_fmax,
                           with_accuracy=not args.no_accuracy, epochs=args.epochs)
    from studies.results import collect_synth_reports, synth_section

    extra = synth_section(collect_synth_reports(BUILD))
    paths = write_results(rows, args.docs, seeds=args.seeds, extra=extra, epochs=args.epochs)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
