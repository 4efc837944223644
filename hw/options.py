"""Command-line conventions shared by the hardware commands (verilog, synth, fit, host) and ``sim``.

One spelling for the options every one of them takes, so they read the same everywhere:

- ``--board BOARD``: an option (never a positional), with the same choices everywhere.
- ``--bits BITS``: optional everywhere; the ``--model`` bundle's own BITS when a bundle is given, else
  :data:`DEFAULT_BITS` (the shipped bundle); values outside the offered range are refused with that
  range (:func:`golden.formats.check_bits`) before any file is read.
- ``--json``: print the result as one JSON object on stdout instead of the summary lines;
  ``--report FILE``: also write that JSON object to FILE. Progress bars go to stderr either way.

Output locations are checked for writing before any work starts (:func:`check_writable`), so a
read-only folder costs nothing but a one-line error.
"""

import json
import sys
from pathlib import Path

from asqhw.atomic import check_writable
from asqhw.errors import UserError
from golden.formats import INT_BITS, check_bits, range_text

#: BITS of the shipped bundle a command uses when neither ``--bits`` nor ``--model`` is given.
DEFAULT_BITS = 3

BITS_HELP = (f"bits of the middle layers, {range_text(INT_BITS)} (default: the --model bundle's, "
             f"else {DEFAULT_BITS})")
MODEL_HELP = "bundle folder written by `asqhw export` (default: the shipped models/digits-b<BITS>)"


def add_bits_and_model(parser) -> None:
    """``--bits`` and ``--model``, as every hardware command takes them."""
    parser.add_argument("--bits", type=int, default=None, metavar="BITS", help=BITS_HELP)
    parser.add_argument("--model", type=Path, default=None, metavar="BUNDLE", help=MODEL_HELP)


def add_board(parser, choices) -> None:
    """``--board``, one of ``choices`` (checked by :func:`hw.eda.boards.get_board`, whose message names them)."""
    parser.add_argument("--board", default=None, metavar="BOARD", help=f"target board: {', '.join(choices)}")


def add_json(parser) -> None:
    """``--json`` (print the JSON result) and ``--report FILE`` (write it)."""
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on stdout instead of the summary lines")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="also write the JSON result to FILE")


def resolve_bundle(args) -> tuple[int, Path]:
    """``(bits, bundle folder)`` of the parsed ``--bits`` and ``--model``; UserError with the fix.

    ``--bits`` is checked against the offered range first. With ``--model`` the folder must hold a
    bundle, and BITS defaults to the bundle's; without, the shipped ``models/digits-b<BITS>``.
    """
    from golden.bundle import MANIFEST, SHIPPED_MODELS, bundle_folder, read_manifest

    if args.bits is not None:
        check_bits(args.bits, "--bits ")
    if args.model is not None:
        path = bundle_folder(args.model, DEFAULT_BITS if args.bits is None else args.bits)
        bits = args.bits if args.bits is not None else read_manifest(path).bits
        return bits, path
    bits = DEFAULT_BITS if args.bits is None else args.bits
    path = SHIPPED_MODELS / f"digits-b{bits}"
    if not (path / MANIFEST).is_file():
        shipped = sorted(int(p.name.removeprefix("digits-b")) for p in SHIPPED_MODELS.glob("digits-b*")
                         if (p / MANIFEST).is_file())
        have = ", ".join(map(str, shipped)) or "none"
        raise UserError(f"no bundle for BITS={bits} at {path} (shipped: BITS {have}). Fix: pass "
                        "--model BUNDLE (make: MODEL=BUNDLE) with a bundle `asqhw export` wrote, or "
                        "one of the shipped BITS")
    return bits, path


def check_report_writable(args) -> None:
    """:func:`check_writable` for ``--report FILE`` (when given)."""
    if args.report is not None:
        check_writable(args.report, what="the --report file", fix="pass --report with a writable path")


def emit(args, result: dict, text: str) -> None:
    """Print ``text`` (or, with ``--json``, ``result`` as JSON); write ``--report FILE`` when given."""
    from asqhw.atomic import atomic_write_text

    blob = json.dumps(result, indent=1, default=str)
    if args.report is not None:
        atomic_write_text(args.report, blob + "\n")
    if args.json:
        print(blob)
    else:
        print(text)
    sys.stdout.flush()


def graph_bundle_manifest(model, bits: int, mul, simd):
    """The manifest of the graph (format-2) bundle ``model``, after refusing the chain accelerator's
    options that do not apply to the graph engine: a ``bits`` other than the bundle's, any ``mul``,
    and a ``simd`` other than the generator's default (the engine's parallelism is ``--pe``)."""
    from golden.bundle import read_manifest
    from hw.rtl.plan import DEFAULT_SIMD

    manifest = read_manifest(model)
    if bits != manifest.bits:
        raise UserError(f"--bits {bits}: the graph bundle {model} is BITS={manifest.bits}; its widths are fixed "
                        "per node (drop --bits)")
    if mul is not None:
        raise UserError(f"--mul {mul}: a graph bundle runs each node's own weight format on the engine "
                        "(drop --mul)")
    if simd not in (None, DEFAULT_SIMD):
        raise UserError(f"--simd {simd}: the graph engine takes one input position per cycle for PE output "
                        "channels (drop --simd; --pe sets its parallelism)")
    return manifest
