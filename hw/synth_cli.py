"""``asqhw synth``, ``asqhw fit`` and ``asqhw host``."""

import sys
from pathlib import Path

from asqhw.errors import UserError
from golden.formats import WEIGHT_KINDS

BUILD = Path("build")


def register(subparsers) -> None:
    """Add the synthesis, fit and host subcommands."""
    _register_synth(subparsers)
    _register_fit(subparsers)
    _register_host(subparsers)


def _design_args(parser, parallelism=True):
    """``--bits``, ``--model``, ``--mul`` and (unless the command searches them) ``--pe``, ``--simd``."""
    from hw.options import add_bits_and_model

    add_bits_and_model(parser)
    if parallelism:
        _parallelism_args(parser)
    parser.add_argument("--mul", choices=WEIGHT_KINDS, help="multiplier (default: the bundle's weight format)")


def _parallelism_args(parser):
    parser.add_argument("--pe", type=int, help="output channels per cycle, a power of two (default: the generator's)")
    parser.add_argument("--simd", type=int, help="input channels per cycle, a power of two (default: the generator's)")


# ------------------------------------------------------------------------------------------------ synth


def _register_synth(subparsers):
    from hw.eda.boards import BOARDS
    from hw.options import add_board, add_json

    p = subparsers.add_parser(
        "synth", help="synthesize, place and route the accelerator for a board (report.json)",
        description="Wrap asq_accel for BOARD (UART link at 115200 baud, clocked by the board's PLL at the "
        "fastest setting that meets timing over the seeds, see --clock), "
        "synthesize, place and route it with nextpnr over --seeds seeds and pack the bitstream, all under "
        "build/synth/<board>-b<bits>/ with report.json. BOARD=generic: technology-independent Yosys "
        "synthesis, gate and flip-flop counts. Fails (exit 2) with the figures when the design does not "
        "fit, misses the board clock or leaves a path untimed (a DSP used without its registers, a "
        "constant clock, a path between clock domains).",
    )
    add_board(p, BOARDS)
    _design_args(p)
    p.add_argument("--seeds", type=int, default=3, help="nextpnr seeds for Fmax (default 3)")
    p.add_argument("--clock", type=_clock_arg, default="auto", metavar="auto|osc|MHZ",
                   help="auto (default): the board's PLL at the fastest setting that meets timing on every "
                   "seed, chosen by placing and routing; osc: the board oscillator, no PLL; MHZ: the PLL's "
                   "fastest setting at or under MHZ")
    p.add_argument("--baud", type=int, help="UART rate of the link `asqhw host` talks to (default 115200); "
                   "iCEBreaker: a rate its FT2232H makes (12 MHz / n, up to 12000000), checked against the "
                   "design clock (at least 3 clocks per bit, within 0.5 %% at 3; 12000000 takes 36 or 48 MHz)")
    p.add_argument("--reply", choices=("logits", "class"), default="logits",
                   help="what the board sends back per image: every logit then the class (default; the graph "
                   "engine: its output values, the host takes the class), or the class alone in one byte")
    p.add_argument("--window", type=int, default=1, help="images the host may keep in flight (default 1); more "
                   "builds an input buffer of (window - 1) images")
    p.add_argument("--out", type=Path, help="output folder (default build/synth/<board>-b<bits>; a graph bundle: "
                   "build/synth/<board>-<model>-b<bits>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--weights", choices=("rom", "spram"), default=None,
                   help="graph engine only: weights in block RAM ROMs set by the bitstream, or in the iCE40 "
                   "UP5K's SPRAM, loaded at run time over the link by `asqhw host` (default: ROMs, or on the "
                   "iCEBreaker SPRAM when the ROMs do not fit its block RAM)")
    add_json(p)
    p.set_defaults(handler=run_synth)


def _clock_arg(text: str):
    """``--clock``: "auto", "osc" (None: the oscillator) or a frequency in MHz."""
    import argparse

    if text in ("auto", "osc"):
        return None if text == "osc" else text
    try:
        mhz = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, osc or a frequency in MHz") from None
    if not 0 < mhz < 1000:
        raise argparse.ArgumentTypeError(f"{text} MHz is not a clock an FPGA runs at")
    return mhz


def _board_of(args, fpga_only=False) -> str:
    from hw.eda.boards import BOARDS, FPGA_BOARDS

    board = args.board or getattr(args, "board_positional", None)
    if board is None:
        raise UserError(f"--board is required: one of {', '.join(FPGA_BOARDS if fpga_only else BOARDS)}")
    return board


def _load_checked(model, bits):
    """The bundle at ``model``; UserError when it was trained at other BITS than ``bits``."""
    from hw.eda.synth import load_bundle_for

    bundle = load_bundle_for(model, bits)
    if bundle.manifest.bits != bits:
        raise UserError(f"BITS={bits} but bundle {model} was trained with bits={bundle.manifest.bits}; "
                        f"pass --bits {bundle.manifest.bits} or leave --bits out")
    return bundle


def _check_link_args(args, board) -> None:
    """``--baud``/``--window`` before anything is read: a rate the board's bridge (or, with a fixed
    clock, the clock) cannot make, or no image in flight."""
    from hw.eda.synth import check_link_baud
    from hw.link.rates import check_baud

    if args.window < 1:
        raise UserError(f"--window {args.window}: keep at least 1 image in flight")
    if args.baud is None or not board.is_fpga:
        return
    if board.name == "icebreaker":
        check_baud(args.baud)  # the FT2232H alone; the clock is checked at each setting tried
    if args.clock != "auto":
        from hw.eda.pll import fastest_at_most

        mhz = board.clock_mhz
        if args.clock is not None:
            setting = fastest_at_most(board.family, board.clock_mhz, float(args.clock))
            mhz = setting.f_out if setting is not None else mhz
        check_link_baud(board, args.baud, mhz * 1e6)


def run_synth(args) -> int:
    from hw.eda.boards import get_board
    from hw.eda.estimate import format_estimate
    from hw.eda.generate import uses_engine
    from hw.eda.synth import synthesize_accelerator
    from hw.options import check_report_writable, check_writable, emit, resolve_bundle

    board = get_board(_board_of(args))
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be at least 1")
    _check_link_args(args, board)
    bits, model = resolve_bundle(args)
    if uses_engine(model):
        return run_engine_synth(args, board, bits, model)
    if args.weights not in (None, "rom"):
        raise UserError(f"--weights {args.weights}: the chain accelerator keeps its weights in ROMs; SPRAM "
                        "weights are the graph engine's (drop --weights)")
    out = args.out or BUILD / "synth" / f"{board.name}-b{bits}"
    check_writable(out, what="the synthesis folder", fix="pass --out with a writable folder", folder=True)
    check_report_writable(args)
    bundle = _load_checked(model, bits)
    say = _say(args)
    report = synthesize_accelerator(bundle, board.name, out, pe=args.pe, simd=args.simd, mul=args.mul,
                                    seeds=args.seeds, progress=not args.quiet, clock=args.clock,
                                    baud=args.baud, reply=args.reply, window=args.window,
                                    on_estimate=lambda est: say(format_estimate(est, board.family)))
    emit(args, report, format_report(report) + f"\nreport: {out / 'report.json'}")
    return 0


def _say(args):
    """Print a line now: on stderr under --json (stdout holds the JSON), else on stdout."""
    if args.json:
        return lambda text: print(text, file=sys.stderr, flush=True)
    return lambda text: print(text, flush=True)


def run_engine_synth(args, board, bits, model) -> int:
    """``asqhw synth`` on a graph (format-2) bundle: the descriptor-driven engine on the board."""
    from hw.eda.generate import memory_summary
    from hw.eda.synth import synthesize_engine
    from hw.options import check_report_writable, check_writable, emit, graph_bundle_manifest

    manifest = graph_bundle_manifest(model, bits, args.mul, args.simd)
    out = args.out or BUILD / "synth" / f"{board.name}-{manifest.model}-b{bits}"
    check_writable(out, what="the synthesis folder", fix="pass --out with a writable folder", folder=True)
    check_report_writable(args)
    say = _say(args)

    def on_plan(info):
        say(f"graph engine of {manifest.model} BITS={bits} PE={info['memory_map']['pe']}: "
            f"{info['cycles_per_inference']} cycles per image (schedule), MAC bound {info['mac_bound_cycles']}")
        say("memory map: " + memory_summary(info["memory_map"]))
        fit = info.get("block_memory")
        if fit:
            say(f"block memory: {fit['blocks']} of {fit['blocks_available']} {fit['block_cell']} "
                f"(ROM {fit['kbit']['rom']:g} kbit, RAM {fit['kbit']['ram']:g} kbit)"
                + (f", SPRAM {fit['spram_used']} of {fit['spram_available']}" if fit["spram_used"] else ""))
        weights = info["weights"]
        if weights["store"] != "rom":
            say(f"weights in {weights['store'].upper()}, loaded at run time: {weights['words16']} 16-bit words, "
                f"{weights['load_bytes']} bytes on the link before the first image")

    report = synthesize_engine(model, board.name, out, pe=args.pe, seeds=args.seeds, baud=args.baud,
                               window=args.window, progress=not args.quiet, clock=args.clock, on_plan=on_plan,
                               reply=args.reply, weights=args.weights)
    emit(args, report, format_report(report) + f"\nreport: {out / 'report.json'}")
    return 0


def _default(name):
    from hw.rtl import plan

    return {"pe": plan.DEFAULT_PE, "simd": plan.DEFAULT_SIMD}[name]


def format_report(report: dict) -> str:
    """A few lines a person reads after ``asqhw synth``."""
    d = report["design"]
    if d.get("engine"):
        head = f"{d.get('top')} of {d.get('model')} BITS={d.get('bits')} PE={d.get('pe')}"
    else:
        head = f"{d.get('top')} BITS={d.get('bits')} MUL={d.get('mul')} PE={d.get('pe')} SIMD={d.get('simd')}"
    lines = [f"{report['board']} ({report['device']}): {head}"]
    if "generic" in report:
        g = report["generic"]
        lines.append(f"  gates {g['gates']}, flip-flops {g['flip_flops']}, {g['nand2_equivalents']} NAND2 equivalents")
        for cell, n in list(g["gates_by_type"].items()) + list(g["flip_flops_by_type"].items()):
            lines.append(f"    {cell:16s} {n}")
        return "\n".join(lines)
    for key, v in report["resources"].items():
        lines.append(f"  {key:12s} {v['used']:6d} / {v['available']}")
    f = report["fmax_mhz"]
    clock = report.get("clock") or {}
    source = "PLL clock" if clock.get("source") == "pll" else "board clock"
    lines.append(f"  Fmax median {f['median']:.2f} MHz, min {f['min']:.2f} MHz over {len(f['seeds'])} seeds; "
                 f"{source} {report['clock_mhz']} MHz {'met' if report['clock_met'] else 'MISSED'}")
    if clock.get("pll"):
        slack = (clock.get("slack_ns") or {}).get("min")
        tried = ", ".join(f"{p['mhz']:g}" for p in clock.get("passes", []))
        lines.append(f"  PLL {clock['pll']['params']} from {clock['oscillator_mhz']} MHz ({clock['mode']}; "
                     f"tried {tried} MHz); worst slack {slack} ns")
    ips = report["inferences_per_s"]
    lines.append(f"  {report['macs_per_cycle']} MACs/cycle, {report['cycles_per_inference']} cycles/inference: "
                 f"{ips['at_board_clock']:g} inferences/s at the clock, {ips['at_fmax_median']:g} at Fmax")
    engine = report.get("engine")
    if engine:
        from hw.eda.generate import memory_summary

        lines.append(f"  MAC bound {engine['mac_bound_cycles']} cycles ({100 * engine['mac_efficiency']:.1f} % of the "
                     "cycles multiply); memory map: " + memory_summary(engine["memory_map"]))
        fit = engine.get("block_memory")
        if fit and "resources" in report:
            lines.append(f"  block RAM: {report['resources']['block_ram']['used']} {fit['block_cell']} used, "
                         f"{fit['blocks']} planned before synthesis (at least {fit['blocks_data']})")
    link = report.get("link")
    if link and "images_per_s_over_link" in link:
        lines.append(f"  link: {link['baud']} baud, {link['reply']} reply, window {link['window']}: "
                     f"{link['bytes_in_per_image']} bytes in, {link['bytes_out_per_image']} out per image; "
                     f"{link['images_per_s_over_link']:g} images/s over the link")
        replies = link.get("replies")
        if replies:
            lines.append("  the same line, per reply: " + "; ".join(
                f"{reply} {v['bytes_out_per_image']} bytes back: {v['images_per_s_line']:g} images/s (line), "
                f"{v['images_per_s_one_at_a_time']:g} one at a time, {v['images_per_s_in_flight']:g} in flight"
                for reply, v in replies.items() if isinstance(v, dict))
                + f" (compute {replies['compute_images_per_s']:g} images/s)")
    for key, v in report.get("estimate_vs_synthesis", {}).items():
        err = "n/a" if v["error"] is None else f"{100 * v['error']:+.1f} %"
        lines.append(f"  estimate {key}: {v['estimate']} vs {v['synthesis']} ({err})")
    if report.get("synth_note"):
        lines.append(f"  note: {report['synth_note']}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- fit


def _register_fit(subparsers):
    from hw.eda.boards import BOARDS
    from hw.options import add_board, add_json

    p = subparsers.add_parser(
        "fit", help="find the largest PE x SIMD that fits BOARD and meets its clock",
        description="Try PE x SIMD in order of inferences per second, largest first: the resource estimate "
        "skips what might not fit (logic cells or LUT4 over the device once raised by the estimate's largest "
        "measured error, or more block RAMs than it has), then each remaining candidate is placed and routed "
        "until one fits "
        "and meets the board clock. Writes OUT/fit.json (default build/fit/<board>-b<bits>); a fit.json "
        "that holds a result is replaced only by another result.",
    )
    add_board(p, BOARDS)
    p.add_argument("board_positional", nargs="?", metavar="BOARD",
                   help="same as --board (the older spelling)")
    _design_args(p, parallelism=False)  # fit searches PE and SIMD itself
    p.add_argument("--max", type=int, default=16, dest="max_par", metavar="N",
                   help="largest PE and SIMD tried, at least 1 (default 16)")
    p.add_argument("--seeds", type=int, default=1, help="nextpnr seeds per candidate (default 1)")
    p.add_argument("--out", type=Path, help="output folder (default build/fit/<board>-b<bits>)")
    add_json(p)
    p.set_defaults(handler=run_fit)


def run_fit(args) -> int:
    from hw.eda.boards import get_board
    from hw.eda.fit import find_fit
    from hw.options import check_report_writable, check_writable, emit, resolve_bundle

    if args.board and args.board_positional and args.board != args.board_positional:
        raise UserError(f"two boards: --board {args.board} and {args.board_positional}; give one")
    board = get_board(_board_of(args, fpga_only=True))
    if not board.is_fpga:
        raise UserError(f"fit needs an FPGA board (icebreaker, ulx3s), not {board.name!r}")
    if args.max_par < 1:
        raise UserError(f"--max {args.max_par}: the largest PE and SIMD tried must be at least 1")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be at least 1")
    bits, model = resolve_bundle(args)
    out = args.out or BUILD / "fit" / f"{board.name}-b{bits}"
    check_writable(out, what="the fit folder", fix="pass --out with a writable folder", folder=True, inside=True)
    check_report_writable(args)
    bundle = _load_checked(model, bits)
    result = find_fit(bundle, board.name, mul=args.mul, max_par=args.max_par, seeds=args.seeds, out_dir=out,
                      log=lambda text: print(text, file=sys.stderr, flush=True))
    best = result["best"]
    emit(args, result, f"{board.name}: PE={best['pe']} SIMD={best['simd']}: {best['inferences_per_s_at_clock']:.0f} "
         f"inferences/s at {best['clock_mhz']:g} MHz, {best['logic_cells']} logic cells, {best['lut4']} LUT4, "
         f"Fmax {best['fmax_mhz']:.1f} MHz\n"
         f"{result['counts_text']}\nresult: {out / 'fit.json'}")
    return 0


# ------------------------------------------------------------------------------------------------- host


def _register_host(subparsers):
    from hw.options import add_json
    from hw.rtl.accel.argmax import REPLIES

    p = subparsers.add_parser(
        "host", help="send test images over the serial link and read back the classes",
        description="Send the digits test images (the bundle's input codes) to a board running the "
        "`asqhw synth` bitstream and read the logits and classes; compare with the golden model. "
        "--simulate runs the same protocol against the design simulated in-process instead of a board. "
        "--baud, --reply and --window must match how the bitstream was built. "
        "Exit status 1 when the board's answers differ from the golden model's.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device of the board (iCEBreaker: usually /dev/ttyUSB1; or a pyftdi "
                       "URL such as ftdi://ftdi:2232h/2)")
    where.add_argument("--simulate", action="store_true", help="talk to the simulated design (slow: few images)")
    _design_args(p)
    p.add_argument("--baud", type=int, help="serial baud rate, one the FT2232H makes (12 MHz / n: up to 12000000; "
                   "default 115200, what `asqhw synth` builds; with --simulate: simulate the link at this rate "
                   "from --clock-mhz instead of the fastest the simulation allows)")
    p.add_argument("--clock-mhz", type=float, help="the design clock of the bitstream: refuse a --baud it cannot "
                   "make (default with --simulate: 12, the iCEBreaker's oscillator)")
    p.add_argument("--reply", choices=REPLIES, default="logits", help="what the board sends back per image: every "
                   "logit then the class (default; the graph engine of a graph bundle: its output values, the class "
                   "taken here), or the class alone, one byte (a bitstream built for it)")
    p.add_argument("--window", type=int, default=1, help="images in flight (default 1: each image after the "
                   "previous reply); more needs a bitstream with an input buffer of (window - 1) images")
    p.add_argument("--count", type=int, help="images to send, at least 1 (default: all 360; 2 with --simulate)")
    p.add_argument("--synth-report", type=Path, help="the report.json of the bitstream's `asqhw synth`: a design "
                   "with its weights in SPRAM gets the bundle's weights first (checked against the report)")
    add_json(p)
    p.set_defaults(handler=run_host)


def run_host(args) -> int:
    import time

    import numpy as np
    from tqdm import tqdm

    from hw.link.host import SerialPort, run_images
    from hw.link.rates import DEFAULT_BAUD, check_baud, link_budget
    from hw.options import check_report_writable, emit, resolve_bundle

    if args.count is not None and args.count < 1:
        raise UserError(f"--count {args.count}: send at least 1 image")
    if args.window < 1:
        raise UserError(f"--window {args.window}: keep at least 1 image in flight")
    if args.clock_mhz is not None and args.clock_mhz <= 0:
        raise UserError(f"--clock-mhz {args.clock_mhz} must be positive")
    baud = args.baud or DEFAULT_BAUD
    clock_mhz = args.clock_mhz or (12.0 if args.simulate else None)
    # Before anything is read or opened: a rate the FT2232H or the design clock cannot make.
    divisor = check_baud(baud, None if clock_mhz is None else clock_mhz * 1e6)
    bits, path = resolve_bundle(args)
    check_report_writable(args)
    from hw.eda.generate import uses_engine

    engine = None
    if uses_engine(path):  # a graph that is not a chain: the board runs the graph engine
        from hw.options import graph_bundle_manifest

        graph_bundle_manifest(path, bits, args.mul, args.simd)
        engine = _host_engine(path, args.pe)
        if engine.in_width > 8:
            raise UserError(f"the graph engine of {path} takes {engine.in_width}-bit input codes; the host sends "
                            "one signed byte per code (int8 inputs only)")
    vectors = path / "vectors.npz"
    if not vectors.exists():
        raise UserError(f"no golden vectors at {vectors}; pass --model BUNDLE or run make export BITS={bits}")
    from golden.model import load_bundle

    bundle = load_bundle(path)
    data = bundle.vectors  # the chain's vectors (format 1's keys) of either bundle format; a graph's own
    count = args.count or (2 if args.simulate else len(data["labels"]))
    if not 1 <= count <= len(data["labels"]):
        raise UserError(f"--count {count} must be 1..{len(data['labels'])}")
    if engine is None:
        codes = data["conv1.in"][:count].reshape(count, -1)
    else:
        from golden.graph import pixels_to_input

        codes = pixels_to_input(bundle.manifest, data["pixels"][:count]).reshape(count, -1)
    golden_cls, golden_logits = data["pred"][:count], data["logits"][:count].reshape(count, -1)
    if args.simulate:
        # Without --baud the link runs at the fewest cycles per bit (the protocol, not the rate, is tested).
        port = _simulated_port(args, path, bits, divisor if args.baud else None, engine=engine)
    else:
        port = SerialPort(args.port, baud=baud)
    from hw.link.host import EngineBeats

    beats = None if engine is None else EngineBeats(engine.word_width)
    prefix = b""
    if args.synth_report is not None:
        from hw.link.weights import prepare_board

        prefix = prepare_board(port, path, args.synth_report)  # the weights first, where the design loads them
    started = time.perf_counter()
    with tqdm(total=count, desc="images", unit="img") as bar:
        results = run_images(port, codes, classes=golden_logits.shape[1], progress=bar, reply=args.reply,
                             window=args.window, engine=beats, image_prefix=prefix)
    seconds = time.perf_counter() - started
    classes = np.array([r.cls for r in results])
    agree = int((classes == golden_cls).sum())
    correct = int((classes == data["labels"][:count]).sum())
    summary = {"images": count, "accuracy": correct / count, "classes_equal_golden": agree}
    if args.reply == "logits":
        logits = np.array([r.logits for r in results])
        same = (logits == golden_logits).all(axis=1)
        exact = int(same.sum())
        summary["logits_equal_golden"] = exact
        lines = [f"{count} images: accuracy {correct / count:.4f}; classes equal golden on {agree}, logits "
                 f"equal golden on {exact}"]
    else:
        same, exact = classes == golden_cls, count
        lines = [f"{count} images: accuracy {correct / count:.4f}; classes equal golden on {agree} (class-only "
                 "reply: no logits)"]
    if args.baud or args.reply != "logits" or args.window != 1:
        n_logits, beat_bytes = golden_logits.shape[1], {}
        if beats is not None:  # the engine's beats; its logits reply has no class beat after the values
            n_logits, beat_bytes = n_logits - (args.reply == "logits"), {"out_beat_bytes": beats.bytes}
        link = link_budget(input_bytes=codes.shape[1], n_logits=n_logits, baud=baud, reply=args.reply, **beat_bytes)
        link.update(window=args.window,
                    measured=_measured_rate(port, count, clock_mhz, seconds, link["bytes_out_per_image"]))
        summary["link"] = link
        lines.append(_link_line(link))
    if exact < count or agree < count:
        first = int(np.flatnonzero(~same | (classes != golden_cls))[0])
        answered = f"logits {logits[first].tolist()} class" if args.reply == "logits" else "class"
        lines.append(f"MISMATCH: image {first}: the board answered {answered} {classes[first]}, golden "
                     f"{golden_logits[first].tolist()} class {golden_cls[first]}; the bitstream is not the one this "
                     "bundle generates (rebuild it with `asqhw synth` and the same --model/--bits/--pe/--simd)")
    emit(args, summary, "\n".join(lines))
    return 0 if agree == count and exact == count else 1


def _measured_rate(port, count, clock_mhz, seconds, reply_bytes) -> dict:
    """Images per second this run achieved: simulated cycles (``--simulate``) or the wall clock."""
    cycles = getattr(port, "cycles_per_reply", None)
    if cycles is not None:
        per_image = cycles(reply_bytes)
        if per_image is None:
            return {"source": "simulation", "cycles_per_image": None, "images_per_s": None}
        return {"source": "simulation", "cycles_per_image": per_image,
                "images_per_s": round(clock_mhz * 1e6 / per_image, 1)}
    return {"source": "wall clock", "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1)}


def _link_line(link: dict) -> str:
    measured = link["measured"]
    seen = (f"; measured {measured['images_per_s']} images/s ({measured['source']})"
            if measured.get("images_per_s") else "")
    return (f"link: {link['baud']} baud, {link['bytes_in_per_image']} bytes in and {link['bytes_out_per_image']} "
            f"out per image ({link['reply']} reply): the line allows {link['images_per_s_pipelined']:.0f} images/s "
            f"with images in flight, {link['images_per_s_one_at_a_time']:.0f} one at a time; window "
            f"{link['window']}{seen}")


def _host_engine(bundle_path, pe):
    """The graph engine of ``bundle_path`` at ``pe`` (its output word sets the logits reply's beats)."""
    from hw.eda.generate import build_engine

    engine = build_engine(bundle_path, pe=pe or _default("pe"))
    for unit in (engine, engine.asq_unit):  # simulated only with --simulate
        if unit is not None:
            unit._MustUse__silence = True
    return engine


def _simulated_port(args, bundle_path, bits, divisor=None, engine=None):
    from golden.model import load_bundle
    from hw.eda.generate import build_top
    from hw.link.board import accel_link
    from hw.link.host import SimulatedBoard
    from hw.rtl.uart import MIN_DIVISOR

    if engine is not None:
        from hw.link.engine_board import engine_link, input_bytes, reply_beats

        divisor = divisor or MIN_DIVISOR
        try:
            link = engine_link(engine, divisor=divisor, reply=args.reply, window=args.window)
        except ValueError as err:
            raise UserError(f"--reply {args.reply} --window {args.window}: {err}") from None
        line_cycles = 10 * divisor * (input_bytes(engine) + link.out_bytes * reply_beats(engine, args.reply))
        return SimulatedBoard(link, max_cycles=4 * engine.estimate_cycles() + 2 * line_cycles + 200_000)
    top = build_top(load_bundle(bundle_path, vectors=False), pe=args.pe or _default("pe"),
                    simd=args.simd or _default("simd"), mul=args.mul, bits=bits)
    divisor = divisor or MIN_DIVISOR
    try:
        link = accel_link(top, divisor=divisor, reply=args.reply, window=args.window)
    except ValueError as err:
        raise UserError(f"--window {args.window}: {err}") from None
    line_cycles = 10 * divisor * (link.in_bytes * top.plan.input_codes + link.out_bytes * (top.plan.n_logits + 1))
    return SimulatedBoard(link, max_cycles=4 * top.cycles_per_inference() + 2 * line_cycles + 200_000)
