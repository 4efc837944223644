"""``asqhw synth``, ``asqhw fit`` and ``asqhw host``."""

import json
from pathlib import Path

from asqhw.errors import UserError
from golden.formats import WEIGHT_KINDS

BUILD = Path("build")


def register(subparsers) -> None:
    """Add the synthesis, fit and host subcommands."""
    _register_synth(subparsers)
    _register_fit(subparsers)
    _register_host(subparsers)


def _design_args(parser, bits_required=True):
    parser.add_argument("--bits", type=int, required=bits_required, help="BITS of the middle layers (2, 3, 4, 8)")
    parser.add_argument("--model", type=Path, help="bundle folder (default: models/digits-b<BITS>)")
    parser.add_argument("--pe", type=int, help="output channels per cycle (default: the generator's)")
    parser.add_argument("--simd", type=int, help="input channels per cycle (default: the generator's)")
    parser.add_argument("--mul", choices=WEIGHT_KINDS, help="multiplier (default: the bundle's)")


# ------------------------------------------------------------------------------------------------ synth


def _register_synth(subparsers):
    p = subparsers.add_parser(
        "synth", help="synthesize, place and route the accelerator for a board (report.json)",
        description="Wrap asq_accel for BOARD (UART link at 115200 baud, clocked by the board oscillator), "
        "synthesize, place and route it with nextpnr over --seeds seeds and pack the bitstream, all under "
        "build/synth/<board>-b<bits>/ with report.json. BOARD=generic: technology-independent Yosys "
        "synthesis, gate and flip-flop counts. Fails (exit 2) with the figures when the design does not "
        "fit or misses the board clock.",
    )
    p.add_argument("--board", required=True, help="icebreaker (iCE40 UP5K), ulx3s (ECP5-85F) or generic")
    _design_args(p)
    p.add_argument("--seeds", type=int, default=3, help="nextpnr seeds for Fmax (default 3)")
    p.add_argument("--out", type=Path, help="output folder (default build/synth/<board>-b<bits>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_synth)


def run_synth(args) -> int:
    from hw.eda.boards import get_board
    from hw.eda.estimate import format_estimate
    from hw.eda.synth import load_bundle_for, synthesize_accelerator

    board = get_board(args.board)
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be at least 1")
    bundle = load_bundle_for(args.model, args.bits)
    out = args.out or BUILD / "synth" / f"{board.name}-b{args.bits}"
    report = synthesize_accelerator(bundle, board.name, out, pe=args.pe, simd=args.simd, mul=args.mul,
                                    seeds=args.seeds, progress=not args.quiet,
                                    on_estimate=lambda est: print(format_estimate(est), flush=True))
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    return 0


def _default(name):
    from hw.rtl import plan

    return {"pe": plan.DEFAULT_PE, "simd": plan.DEFAULT_SIMD}[name]


def format_report(report: dict) -> str:
    """A few lines a person reads after ``asqhw synth``."""
    d = report["design"]
    lines = [f"{report['board']} ({report['device']}): {d.get('top')} BITS={d.get('bits')} MUL={d.get('mul')} "
             f"PE={d.get('pe')} SIMD={d.get('simd')}"]
    if "generic" in report:
        g = report["generic"]
        lines.append(f"  gates {g['gates']}, flip-flops {g['flip_flops']}, {g['nand2_equivalents']} NAND2 equivalents")
        for cell, n in list(g["gates_by_type"].items()) + list(g["flip_flops_by_type"].items()):
            lines.append(f"    {cell:16s} {n}")
        return "\n".join(lines)
    for key, v in report["resources"].items():
        lines.append(f"  {key:12s} {v['used']:6d} / {v['available']}")
    f = report["fmax_mhz"]
    lines.append(f"  Fmax median {f['median']:.2f} MHz, min {f['min']:.2f} MHz over {len(f['seeds'])} seeds; "
                 f"board clock {report['clock_mhz']} MHz {'met' if report['clock_met'] else 'MISSED'}")
    ips = report["inferences_per_s"]
    lines.append(f"  {report['macs_per_cycle']} MACs/cycle, {report['cycles_per_inference']} cycles/inference: "
                 f"{ips['at_board_clock']:.0f} inferences/s at the board clock, {ips['at_fmax_median']:.0f} at Fmax")
    for key, v in report.get("estimate_vs_synthesis", {}).items():
        err = "n/a" if v["error"] is None else f"{100 * v['error']:+.1f} %"
        lines.append(f"  estimate {key}: {v['estimate']} vs {v['synthesis']} ({err})")
    if report.get("synth_note"):
        lines.append(f"  note: {report['synth_note']}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- fit


def _register_fit(subparsers):
    p = subparsers.add_parser(
        "fit", help="find the largest PE x SIMD that fits BOARD and meets its clock",
        description="Try PE x SIMD in order of inferences per second, largest first: the resource estimate "
        "skips what clearly cannot fit, then each remaining candidate is placed and routed until one fits "
        "and meets the board clock. Writes build/fit/<board>-b<bits>/fit.json.",
    )
    p.add_argument("board", help="icebreaker or ulx3s")
    _design_args(p, bits_required=False)
    p.set_defaults(bits=3)
    p.add_argument("--max", type=int, default=16, dest="max_par", help="largest PE and SIMD tried (default 16)")
    p.add_argument("--seeds", type=int, default=1, help="nextpnr seeds per candidate (default 1)")
    p.set_defaults(handler=run_fit)


def run_fit(args) -> int:
    from hw.eda.fit import find_fit
    from hw.eda.synth import load_bundle_for

    bundle = load_bundle_for(args.model, args.bits)
    result = find_fit(bundle, args.board, mul=args.mul, max_par=args.max_par, seeds=args.seeds,
                      out_dir=BUILD / "fit" / f"{args.board}-b{args.bits}")
    best = result["best"]
    print(f"{args.board}: PE={best['pe']} SIMD={best['simd']}: {best['inferences_per_s']:.0f} inferences/s at "
          f"{best['clock_mhz']} MHz, {best['lut4']} LUT4, Fmax {best['fmax_mhz']:.1f} MHz "
          f"({len(result['tried'])} candidates placed and routed)")
    return 0


# ------------------------------------------------------------------------------------------------- host


def _register_host(subparsers):
    p = subparsers.add_parser(
        "host", help="send test images over the serial link and read back the classes",
        description="Send the digits test images (the bundle's input codes) to a board running the "
        "`asqhw synth` bitstream and read the logits and classes; compare with the golden model. "
        "--simulate runs the same protocol against the design simulated in-process instead of a board.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device of the board (iCEBreaker: usually /dev/ttyUSB1)")
    where.add_argument("--simulate", action="store_true", help="talk to the simulated design (slow: few images)")
    _design_args(p, bits_required=False)
    p.set_defaults(bits=3)
    p.add_argument("--baud", type=int, default=115_200)
    p.add_argument("--count", type=int, help="images to send (default: all 360; 2 with --simulate)")
    p.set_defaults(handler=run_host)


def run_host(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from golden.bundle import bundle_folder
    from hw.link.host import SerialPort, run_images

    path = bundle_folder(args.model, args.bits)
    vectors = path / "vectors.npz"
    if not vectors.exists():
        raise UserError(f"no golden vectors at {vectors}; pass --model BUNDLE or run make export BITS={args.bits}")
    data = np.load(vectors)
    count = args.count or (2 if args.simulate else len(data["labels"]))
    if not 1 <= count <= len(data["labels"]):
        raise UserError(f"--count {count} must be 1..{len(data['labels'])}")
    codes = data["conv1.in"][:count].reshape(count, -1)
    if args.simulate:
        port = _simulated_port(args, path)
    else:
        port = SerialPort(args.port, baud=args.baud)
    with tqdm(total=count, desc="images", unit="img") as bar:
        results = run_images(port, codes, progress=bar)
    classes = np.array([r.cls for r in results])
    logits = np.array([r.logits for r in results])
    golden_cls, golden_logits = data["pred"][:count], data["logits"][:count]
    agree = int((classes == golden_cls).sum())
    exact = int((logits == golden_logits).all(axis=1).sum()) if logits.shape == golden_logits.shape else 0
    correct = int((classes == data["labels"][:count]).sum())
    print(json.dumps({"images": count, "accuracy": correct / count, "classes_equal_golden": agree,
                      "logits_equal_golden": exact}))
    return 0 if agree == count and exact == count else 1


def _simulated_port(args, bundle_path):
    from golden.model import load_bundle
    from hw.eda.generate import build_top
    from hw.link.host import SimulatedBoard
    from hw.rtl.uart import StreamLink

    top = build_top(load_bundle(bundle_path, vectors=False), pe=args.pe or _default("pe"),
                    simd=args.simd or _default("simd"), mul=args.mul)
    return SimulatedBoard(StreamLink(top, divisor=4), max_cycles=4 * top.cycles_per_inference() + 200_000)
