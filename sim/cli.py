"""``asqhw sim``: the whole test split through the generated accelerator on Icarus or Verilator.

Prints the RTL accuracy (and golden's, which it must equal), the cycles per image and the
simulation speed; every logit of every image and every layer's codes are compared with the golden
model, and the first differences are printed (image, layer, index, expected, got) with exit
status 1 when there are any.
"""

import sys
from pathlib import Path

from asqhw.errors import UserError
from golden.formats import WEIGHT_KINDS

#: Images simulated with --waves when --images is not given: a VCD of the whole split would take
#: about 11 GB (30 MB per image on Verilator), an FST about 270 MB.
WAVES_IMAGES = 4


def register(subparsers) -> None:
    from hw.options import add_bits_and_model

    p = subparsers.add_parser(
        "sim", help="simulate the accelerator on the digits test split and compare with golden",
        description="Simulate the generated accelerator on the digits test split (Icarus or "
                    "Verilator) and compare every logit, class and layer code with the golden model; "
                    "prints accuracy, cycles per image and simulation speed.")
    p.add_argument("--simulator", default="verilator", choices=("icarus", "verilator"),
                   help="simulator (default: verilator)")
    add_bits_and_model(p)
    p.add_argument("--pe", type=int, default=None,
                   help="output channels per cycle, a power of two (default: the generator's)")
    p.add_argument("--simd", type=int, default=None,
                   help="input channels per cycle, a power of two (default: the generator's)")
    p.add_argument("--mul", choices=WEIGHT_KINDS, default=None,
                   help="main engine multiplier (default: the bundle's)")
    p.add_argument("--images", "--count", dest="images", type=int, default=None,
                   help="simulate the first N images of the split (default: all)")
    p.add_argument("--stall", type=float, default=None,
                   help="probability of an idle input / stalled output cycle (default 0.2)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random stalls")
    p.add_argument("--waves", action="store_true",
                   help="write a waveform into the build folder (FST on Icarus, VCD on Verilator); "
                        f"simulates the first {WAVES_IMAGES} images unless --images says otherwise")
    p.add_argument("--json", nargs="?", const=True, default=False, metavar="FILE",
                   help="print the summary as one JSON object on stdout instead of the summary lines "
                        "(--json FILE, the older spelling, writes FILE as --report FILE does)")
    p.add_argument("--report", type=Path, default=None, metavar="FILE",
                   help="also write the JSON summary to FILE")
    p.set_defaults(handler=run)


def run(args) -> int:
    from hw.options import check_report_writable, emit, resolve_bundle
    from sim.accel import DEFAULT_STALL, run_accel
    from sim.runner import SimulationFailed

    if args.json not in (True, False):  # --json FILE: the older spelling of --report FILE
        if args.report is not None:
            raise UserError("--json FILE and --report FILE both given; give --report FILE only")
        args.report, args.json = Path(args.json), False
    if args.model is not None and not (Path(args.model) / "manifest.json").exists():
        raise UserError(f"{args.model} is not a bundle folder (no manifest.json); pass --model with the "
                        "folder `asqhw export` wrote")
    bits, bundle = resolve_bundle(args)
    if args.images is not None and args.images < 1:
        raise UserError(f"--images {args.images}: simulate at least 1 image")
    check_report_writable(args)  # before the simulation, not after it
    from hw.eda.generate import uses_engine

    if uses_engine(bundle):
        return run_graph(args, bits, bundle)
    stall = DEFAULT_STALL if args.stall is None else args.stall
    count = args.images
    if args.waves and count is None:
        count = WAVES_IMAGES
        print(f"asqhw sim: --waves without --images: simulating the first {count} images", file=sys.stderr)
    images = None if count is None else range(count)
    try:
        summary = run_accel(args.simulator, bundle, images=images, bits=bits, pe=args.pe,
                            simd=args.simd, mul=args.mul, seed=args.seed, stall=stall, waves=args.waves,
                            progress=True, quiet=True)
    except SimulationFailed as err:  # no summary at all: the build or the simulator itself failed
        raise UserError(f"the simulation did not run: {err}") from None
    emit(args, summary, format_summary(summary))
    return 0 if summary["passed"] else 1


def format_summary(s: dict) -> str:
    """The lines ``asqhw sim`` prints."""
    d = s["design"] or {}
    lines = [f"{s['simulator']}: asq_accel BITS={d.get('bits')} MUL={d.get('mul')} PE={d.get('pe')} "
             f"SIMD={d.get('simd')}, {s['images']} images of {s['bundle']}"]
    if s["passed"]:
        lines.append("every logit, class and layer code equals the golden model")
    else:
        lines += ["MISMATCH: the RTL differs from the golden model", s["report"]]
        if s.get("error"):
            lines.append(s["error"])
    if s["rtl_accuracy"] is not None:
        lines.append(f"accuracy: RTL {s['rtl_accuracy']:.4f}, golden {s['golden_accuracy']:.4f}"
                     + (f", float {s['float_accuracy']:.4f}" if s.get("float_accuracy") is not None else ""))
    if s["cycles_per_image"] is not None:
        lines.append(f"cycles per image: {s['cycles_per_image']:.0f} (min {s['cycles_min']}, max "
                     f"{s['cycles_max']}, stall probability {s['stall']}; {s['cycles_model']} without stalls)")
    lines.append(f"simulation speed: {s['cycles_per_s']:.0f} cycles/s, {s['images_per_s']:.2f} images/s, "
                 f"{s['wall_s']:.1f} s for {s['images']} images")
    if s.get("waves"):
        lines.append(f"waves: {s['waves']}")
    return "\n".join(lines)


def run_graph(args, bits, bundle) -> int:
    """``asqhw sim`` on a graph (format-2) bundle: its engine on Verilator under the plain testbench."""
    from golden.bundle import read_manifest
    from hw.options import emit
    from sim.engine_tb import run_graph_bundle
    from sim.runner import SimulationFailed

    manifest = read_manifest(bundle)
    refused = [(args.simulator != "verilator", f"--simulator {args.simulator}: a graph bundle's engine runs on "
                "verilator only (a ResNet-20 image is about 11 million cycles)"),
               (bits != manifest.bits, f"--bits {bits}: the graph bundle is BITS={manifest.bits} (drop --bits)"),
               (args.simd is not None, "--simd: the graph engine takes one input per cycle (drop --simd)"),
               (args.mul is not None, "--mul: a graph bundle runs each node's own weight format (drop --mul)"),
               (args.stall is not None, "--stall: the graph engine's testbench stalls both streams from an LFSR "
                "(drop --stall; --seed sets it)"),
               (args.waves, "--waves: not offered for the graph engine yet")]
    for bad, why in refused:
        if bad:
            raise UserError(why)
    try:
        summary = run_graph_bundle(bundle, images=args.images, pe=args.pe, seed=args.seed, progress=True)
    except SimulationFailed as err:
        raise UserError(f"the simulation did not run: {err}") from None
    emit(args, summary, format_graph_summary(summary))
    return 0 if summary["passed"] else 1


def format_graph_summary(s: dict) -> str:
    """The lines ``asqhw sim`` prints for a graph bundle."""
    d = s["design"]
    lines = [f"verilator: graph_engine of {d['model']} BITS={d['bits']} PE={d['pe']}, {s['images']} images of "
             f"{s['bundle']} (stalls: {s['stall']})"]
    if s["passed"]:
        lines.append("every output value equals golden.graph.run_graph")
    else:
        lines += [f"MISMATCH: the RTL differs from golden.graph.run_graph ({s['mismatches']} values)", s["report"]]
    if s["rtl_accuracy"] is not None:
        lines.append(f"accuracy: RTL {s['rtl_accuracy']:.4f}, golden {s['golden_accuracy']:.4f}"
                     + (f", float {s['float_accuracy']:.4f}" if s.get("float_accuracy") is not None else ""))
    if s["cycles_per_image"] is not None:
        lines.append(f"cycles per image: {s['cycles_per_image']:.0f} (min {s['cycles_min']}, max {s['cycles_max']}; "
                     f"{s['cycles_model']} by the engine's schedule estimate; MAC bound {s['mac_bound_cycles']})")
    lines.append(f"simulation speed: {s['s_per_image']:.1f} s per image, {s['cycles_per_s']:.0f} cycles/s, "
                 f"{s['wall_s']:.1f} s for {s['images']} images (build {s['build_s']:.0f} s)")
    return "\n".join(lines)
