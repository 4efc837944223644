"""Measure logic cells against the estimate for a set of accelerators (the data behind
:data:`hw.eda.estimate.LC_WEIGHTS`).

For each (BITS, PE, SIMD): the shipped bundle's accelerator behind the UART link, synthesized by
Yosys for the board and packed by nextpnr (``--pack-only``: the packer fixes the logic-cell count,
placement and routing do not change it), and the estimate of the same design. Writes
``benchmarks/results/lc_calibration.json`` with every sample and the weights
:func:`hw.eda.estimate.calibrate_logic_cells` fits to them. Not part of ``make bench`` (its name has
no ``bench_`` prefix): run it when the generator's area changes.

Usage: ``python benchmarks/calibrate_lc.py [--board icebreaker] [--designs 3x4x4,3x2x2,...]``
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DESIGNS = "3x4x4,3x2x2,3x4x2,3x8x4,2x4x4,4x4x4"


def measure(bits: int, pe: int, simd: int, board: str, build: Path) -> dict:
    """Yosys' cells and nextpnr's packed logic cells of one accelerator, beside its estimate."""
    from hw.eda.boards import get_board
    from hw.eda.estimate import estimate_accelerator
    from hw.eda.generate import build_top
    from hw.eda.synth import BOARD_TOP, Resources, load_bundle_for, pack_only
    from hw.rtl.uart import LinkOnBoard

    spec = get_board(board)
    top = build_top(load_bundle_for(None, bits), pe=pe, simd=simd)
    est = estimate_accelerator(top.plan, board)
    out = build / f"b{bits}-pe{pe}-simd{simd}"
    packed = pack_only(LinkOnBoard(top, spec.clock_mhz * 1e6), board, out, name=BOARD_TOP)
    res = Resources.from_cells(packed.cells, spec)
    return {"bits": bits, "pe": pe, "simd": simd, "logic_cells": packed.logic_used, "lut4": res.lut4, "ff": res.ff,
            "estimate": {k: est[k] for k in ("logic_cells", "lut4", "ff", "fmax_mhz") if k in est},
            "lut4_by_kind": est["lut4_by_kind"]}


def main(argv=None) -> dict:
    from asqhw.atomic import atomic_write_text
    from hw.eda.estimate import calibrate_logic_cells

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--designs", default=DESIGNS, help="BITSxPExSIMD, comma-separated")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "calibrate-lc")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lc_calibration.json")
    args = parser.parse_args(argv)
    samples = []
    path = args.out
    for design in args.designs.split(","):
        bits, pe, simd = (int(x) for x in design.split("x"))
        sample = measure(bits, pe, simd, args.board, args.build)
        samples.append(sample)
        err = (sample["estimate"].get("logic_cells", 0) - sample["logic_cells"]) / sample["logic_cells"]
        print(f"{design}: {sample['logic_cells']} logic cells (estimate {sample['estimate'].get('logic_cells')}, "
              f"{100 * err:+.1f} %), {sample['lut4']} LUT4 (estimate {sample['estimate']['lut4']}), "
              f"{sample['ff']} FF (estimate {sample['estimate']['ff']})", flush=True)
        fit = calibrate_logic_cells([(s["estimate"]["lut4"], s["estimate"]["ff"], s["logic_cells"])
                                     for s in samples])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"board": args.board, "samples": samples, "lc_weights": fit}, indent=1))
    print(f"fitted LC weights {fit}; wrote {path}")
    return {"samples": samples, "lc_weights": fit}


if __name__ == "__main__":
    main()
