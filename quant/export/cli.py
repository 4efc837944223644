"""``asqhw export``, and the report of ``asqhw eval --golden BUNDLE`` (its option is registered with
``eval`` in :mod:`quant.cli`)."""

import json
from pathlib import Path

from asqhw.errors import UserError

#: What ``export --format`` writes.
FORMATS = ("bundle", "qonnx", "onnx")


def register(subparsers) -> None:
    """Add the ``export`` subcommand."""
    export = subparsers.add_parser(
        "export", help="write the model bundle (manifest, .mem weights, golden vectors) of a checkpoint",
        description="Fold a trained quantized checkpoint (of an exportable network: digits, digits-vary, or "
        "ResNet-20 on digits32) into the "
        "integer model the hardware implements (docs/arithmetic.md) and write the bundle folder OUTDIR, "
        "bundle format 2 (a graph, docs/arithmetic.md section 7.8; format-1 bundles stay readable): "
        "manifest.json, one $readmemh .mem file per weight memory and vectors.npz (golden vectors of "
        "the network's test split: the 360 digits test images). OUTDIR is replaced atomically; one inside "
        "the repository's models/ (the shipped bundles) needs --update-shipped. With --format qonnx, "
        "write instead the float fake-quant model as a QONNX graph to the file OUTDIR (*.onnx), checked "
        "against the float model on the test split with qonnx's executor (docs/qonnx.md); with --format onnx, "
        "that graph in standard ONNX nodes, checked with onnxruntime too.",
    )
    export.add_argument("checkpoint", type=Path, help="checkpoint written by asqhw train")
    export.add_argument("outdir", type=Path, metavar="OUTDIR",
                        help="bundle folder to write (e.g. models/digits-b3); with --format qonnx or onnx the "
                        ".onnx file to write")
    export.add_argument("--format", choices=FORMATS, default="bundle", dest="format",
                        help="bundle: the hardware's model bundle (default); qonnx: a QONNX model of the "
                        "float fake-quant network (docs/qonnx.md); onnx: that model lowered to standard ONNX "
                        "nodes for a plain ONNX runtime (quantizers folded or written as Div/Clip/Floor/Mul)")
    export.add_argument("--post-frac-bits", type=int, default=None, metavar="F",
                        help="fractional bits F of the POST sqrt2 table T[a] = round(a*sqrt2*2^F) "
                        "(default: golden.formats.default_post_frac_bits(BITS), see docs/arithmetic.md 2.2)")
    export.add_argument("--update-shipped", action="store_true",
                        help="allow an OUTDIR inside the repository's models/ folder, replacing a shipped "
                        "bundle (make export passes it); without it such an OUTDIR is refused")
    export.add_argument("--network", metavar="FILE.py:CLASS",
                        help="your own network: the class (or function) that builds its float nn.Module with no "
                        "arguments, in a Python file or importable module (e.g. examples/byon_graph.py:MyResNet). "
                        "The checkpoint holds its state, its config the data set it was trained on (digits, "
                        "digits-vary or digits32); the bundle is a graph (docs/byon.md)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(handler=run_export)


def run_export(args) -> int:
    from quant.export.build import export_checkpoint

    if args.format in ("qonnx", "onnx"):
        if args.network is not None:
            raise UserError("--network exports your own network as a hardware bundle; the QONNX/ONNX export "
                            "covers the shipped models: drop --network or use --format bundle")
        return run_qonnx_export(args)
    bundle = export_checkpoint(args.checkpoint, args.outdir, progress=not args.quiet,
                               post_frac_bits=args.post_frac_bits, update_shipped=args.update_shipped,
                               network=args.network)
    man = bundle.manifest
    acc = man.accuracy
    print(f"{args.outdir}: {man.scheme} bits={man.bits} "
          f"post_frac_bits={man.post_frac_bits}, test top-1 "
          f"float {100 * acc['float']:.2f} %, golden {100 * acc['golden']:.2f} % "
          f"({acc['flips']} of {acc['n_test']} predictions differ)")
    return 0


def run_qonnx_export(args) -> int:
    """``export --format qonnx`` (or ``onnx``): write the QONNX model (or its standard-ONNX lowering) and
    print its agreement with the float model."""
    from quant.export.qonnx import export_qonnx_checkpoint

    if args.post_frac_bits is not None:
        raise UserError("--post-frac-bits sets the POST table of the hardware bundle; a QONNX model has "
                        "no table (it holds the float model): drop it or use --format bundle")
    agreement = export_qonnx_checkpoint(args.checkpoint, args.outdir, update_shipped=args.update_shipped,
                                        standard=args.format == "onnx")
    what = "standard-ONNX model" if args.format == "onnx" else "QONNX model"
    print(f"{args.outdir}: {what}; qonnx executor vs float model on the test split: {agreement.summary()}")
    return 0


def run_golden_eval(args) -> int:
    """Print :func:`quant.export.fidelity.golden_report` of ``args.golden`` (JSON with ``--json``)."""
    from quant.export.fidelity import golden_report

    report = golden_report(args.golden, getattr(args, "checkpoint", None))
    print(json.dumps(report, indent=2) if getattr(args, "json", False) else format_report(report))
    return 0


def format_report(report: dict) -> str:
    """Human-readable form of a golden report."""
    lines = [f"{report['bundle']}: {report['scheme']} bits={report['bits']}, golden top-1 "
             f"{report['golden_top1']:.2f} % on {report['n_test']} test images"]
    if report.get("beta_spread"):
        lines.append(f"{'ASQ beta':<12}{'distinct':>9}{'min':>9}{'median':>9}{'max':>9}{'(max-min)/median':>18}")
        for row in report["beta_spread"]:
            lines.append(f"{row['layer']:<12}{row['distinct']:>9d}{row['min']:>9.4f}{row['median']:>9.4f}"
                         f"{row['max']:>9.4f}{100 * row['spread']:>17.2f}%")
    if "float_top1" in report and "nodes" in report:
        lines.append(f"float top-1 {report['float_top1']:.2f} %, {report['flips']} predictions differ")
        lines.append(f"{'node':<28}{'output':>8}{'differ':>10}{'max diff':>10}")
        for row in report["nodes"]:
            lines.append(f"{row['node']:<28}{row['output']:>8}{row['differ']:>10.5f}{row['max_diff']:>10d}")
        bad = [row["node"] for row in report["teacher_forced"]
               if not all(v for k, v in row.items() if k.endswith("within_bound"))]
        lines.append(f"teacher forced: {len(report['teacher_forced'])} checks, "
                     + ("every bound holds" if not bad else f"bounds broken at {', '.join(bad)}"))
    elif "float_top1" in report:
        lines.append(f"float top-1 {report['float_top1']:.2f} %, {report['flips']} predictions differ")
        lines.append(f"{'layer input':<12}{'codes differ':>14}{'max |dcode|':>13}{'max err/step':>14}")
        for row in report["layers"]:
            if "codes_differ" in row:
                lines.append(f"{row['layer']:<12}{row['codes_differ']:>14.5f}{row['max_code_diff']:>13d}"
                             f"{row['max_err_steps']:>14.3f}")
            else:
                lines.append(f"{row['layer']:<12} max |dlogit| {row['max_abs_err']:.4f}")
    return "\n".join(lines)
