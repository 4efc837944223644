"""Measure the accelerator on a board against its estimate at several design points (the data behind
:data:`hw.eda.estimate.LUT_WEIGHTS`, :data:`hw.eda.estimate.LC_WEIGHTS` and :data:`hw.eda.estimate.FMAX_MODEL`).

For each design point (BITS x PE x SIMD; the shipped ``models/digits-b<BITS>`` bundle, so its
multiplier): the accelerator behind the UART link, clocked by the board's PLL at a fixed setting
(the board's ``pll_start_mhz``), synthesized by Yosys and placed and routed by nextpnr with one seed
(:func:`hw.eda.synth.synthesize_accelerator`), beside the estimate of the same design. A design that
does not fit the device still gives Yosys' LUT4 and flip-flops and nextpnr's packed logic cells (its
"used > available" line). Every sample records the commit its RTL came from.

Writes ``benchmarks/results/estimate_calibration_<board>.json`` (after every point) with each sample,
the estimate's error per sample (with the weights it ran with) and the weights fitted to the samples
(:func:`hw.eda.estimate.calibrate`, :func:`hw.eda.estimate.calibrate_logic_cells`,
:func:`hw.eda.estimate.calibrate_fmax`). ``--refit`` recomputes the fit and the errors from a
recorded file without running any tool (after the weights in the estimator changed). Not part of
``make bench`` (its name has no ``bench_`` prefix): run it when the generator's area or timing changes.

After a change of the RTL, measure again (every design, or ``--designs ... --update`` for some), then
copy the fitted weights into :mod:`hw.eda.estimate` and the largest errors (``--refit`` prints them
with the new weights) into ``ESTIMATE_ERROR``; ``tests/test_estimate_calibration.py`` checks both.
On 2 busy cores a design point takes 3-5 minutes.

Usage: ``python benchmarks/calibrate_lc.py [--board icebreaker] [--designs 3x4x4,3x2x2,...] [--update]
[--refit [--reprice]] [--table]``
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Each accelerator design counts this many times against one MAC array in the LUT4 fit (the
#: accelerators are what ``asqhw fit`` judges; the arrays keep the weights honest on small designs).
ACCELERATOR_IMPORTANCE = 4
DESIGNS = {"icebreaker": "3x4x4,3x2x2,3x4x2,3x2x4,2x4x4,3x8x4,4x4x4,2x2x2",
           "ulx3s": "3x4x4,3x2x2,3x8x4,3x8x8,2x4x4,4x4x4,4x8x8"}


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                          text=True)
    return done.stdout.strip() or "unknown"


def measure(bits: int, pe: int, simd: int, board: str, build: Path) -> dict:
    """Yosys' LUT4 and flip-flops, nextpnr's logic cells and Fmax (one seed) of one accelerator,
    beside its estimate."""
    from asqhw.errors import UserError
    from hw.eda.boards import get_board
    from hw.eda.synth import load_bundle_for, nextpnr_overflows, synthesize_accelerator

    spec = get_board(board)
    out = build / f"{board}-b{bits}-pe{pe}-simd{simd}"
    started = time.perf_counter()
    try:
        report = synthesize_accelerator(load_bundle_for(None, bits), board, out, pe=pe, simd=simd, seeds=1,
                                        progress=False, clock=spec.pll_start_mhz)
    except UserError:
        report = json.loads((out / "report.json").read_text())
    res = report["resources"]
    sample = {"bits": bits, "pe": pe, "simd": simd, "commit": _commit(), "fits": bool(report.get("fits")),
              "lut4": res["lut4"]["used"], "ff": res["flip_flops"]["used"], "bram": res["block_ram"]["used"],
              "dsp": res["dsp"]["used"], "wall_s": round(time.perf_counter() - started, 1)}
    if "logic_cells" in res:
        sample["logic_cells"] = res["logic_cells"]["used"]
    else:  # did not place: the packer's count from nextpnr's utilisation table
        log = out / "board_top.tim"
        over = [used for cell, used, _ in nextpnr_overflows(log.read_text() if log.exists() else "")
                if cell == spec.logic_cell]
        if over:
            sample["logic_cells"] = over[0]
    if report.get("fmax_mhz"):
        sample["fmax_mhz"] = report["fmax_mhz"]["min"]
        sample["clock_mhz"] = report.get("clock_mhz")
        sample["untimed_paths"] = (report.get("untimed_paths") or {}).get("count")
    est = report["estimate"]
    sample["estimate"] = {k: est[k] for k in ("logic_cells", "lut4", "ff", "bram", "dsp", "fmax_mhz") if k in est}
    sample["lut4_by_kind"] = est["lut4_by_kind"]
    sample["ff_estimate_raw"] = est["ff"]
    return sample


def errors(samples: list, family: str) -> list:
    """Each sample's estimate error with the estimator's weights as they are now (no tool run)."""
    from hw.eda.estimate import LC_WEIGHTS, estimate_fmax, estimate_from_kinds

    out = []
    for s in samples:
        est = estimate_from_kinds(s["lut4_by_kind"], s["ff_estimate_raw"], family)
        row = {"design": f"{s['bits']}x{s['pe']}x{s['simd']}"}
        if "logic_cells" in s and family in LC_WEIGHTS:
            row["logic_cells"] = {"estimate": est["logic_cells"], "measured": s["logic_cells"],
                                  "error": round((est["logic_cells"] - s["logic_cells"]) / s["logic_cells"], 3)}
        row["lut4"] = {"estimate": est["lut4"], "measured": s["lut4"],
                       "error": round((est["lut4"] - s["lut4"]) / s["lut4"], 3)}
        if "fmax_mhz" in s and "logic_cells" in est:
            from hw.eda.boards import BOARDS

            cap = next(b.capacity["logic"] for b in BOARDS.values() if b.family == family)
            f = estimate_fmax(est["logic_cells"], cap, family)
            if f is not None:
                row["fmax_mhz"] = {"estimate": f, "measured": s["fmax_mhz"],
                                   "error": round((f - s["fmax_mhz"]) / s["fmax_mhz"], 3)}
        out.append(row)
    return out


def largest_errors(rows: list) -> dict:
    """Per figure, the largest |error| over the designs (what ``ESTIMATE_ERROR`` must not undercut)."""
    out = {}
    for row in rows:
        for key, v in row.items():
            if isinstance(v, dict):
                out[key] = max(out.get(key, 0.0), abs(v["error"]))
    return out


def reprice(sample: dict, board: str) -> None:
    """Price ``sample``'s design again (no tool run): its ``lut4_by_kind`` and ``ff_estimate_raw``."""
    from hw.eda.estimate import estimate_accelerator
    from hw.eda.synth import load_bundle_for
    from hw.rtl.plan import make_plan

    est = estimate_accelerator(make_plan(load_bundle_for(None, sample["bits"]), pe=sample["pe"], simd=sample["simd"]),
                               board)
    sample["lut4_by_kind"], sample["ff_estimate_raw"] = est["lut4_by_kind"], est["ff"]
    sample["repriced_at"] = _commit()


def array_errors(arrays: list, family: str) -> list:
    """Each MAC array's LUT4 estimate error with the estimator's weights as they are now."""
    from hw.eda.estimate import estimate_from_kinds

    out = []
    for a in arrays:
        est = estimate_from_kinds(a["lut4_by_kind"], 0, family)["lut4"]
        out.append({"design": f"{a['design']} b{a['bits']} {a['pe']}x{a['simd']}", "estimate": est,
                    "measured": a["lut4"], "error": round((est - a["lut4"]) / a["lut4"], 3)})
    return out


def fit(samples: list, board: str, arrays=()) -> dict:
    """The weights the samples determine (LUT4 per kind, logic cells, Fmax). ``arrays``: MAC arrays
    measured by ``asqhw compare`` (Yosys' LUT4 out of context), fitted beside the accelerators so the
    LUT4 weights keep pricing the arrays too."""
    from hw.eda.boards import get_board
    from hw.eda.estimate import calibrate, calibrate_fmax, calibrate_logic_cells, estimate_from_kinds

    spec = get_board(board)
    out = {"lut_weights": calibrate([(s["lut4_by_kind"], s["lut4"], ACCELERATOR_IMPORTANCE) for s in samples]
                                    + [(a["lut4_by_kind"], a["lut4"]) for a in arrays])}
    with_lc = [s for s in samples if "logic_cells" in s]
    if with_lc:
        lut = [estimate_from_kinds(s["lut4_by_kind"], s["ff_estimate_raw"], spec.family,
                                   lut_weights=out["lut_weights"])["lut4_raw"] for s in with_lc]
        out["lc_weights"] = calibrate_logic_cells([(x, s["ff_estimate_raw"], s["logic_cells"])
                                                   for x, s in zip(lut, with_lc, strict=True)])
    timed = [s for s in samples if "fmax_mhz" in s and "logic_cells" in s]
    if len(timed) >= 2:
        out["fmax_model"] = calibrate_fmax([(s["logic_cells"] / spec.capacity["logic"], s["fmax_mhz"])
                                            for s in timed])
    return out


def markdown_table(result: dict) -> str:
    """Per design point: measured, the estimate when the sample ran (before) and with today's weights
    (after), with errors; for the estimator's documentation."""
    def pct(est, measured):
        return f"{100 * (est - measured) / measured:+.1f} %" if est is not None and measured else "-"

    lines = ["| design (BITS x PE x SIMD) | LC measured | LC estimate before -> after | LUT4 measured "
             "| LUT4 estimate before -> after | Fmax measured (MHz) | Fmax estimate before -> after |",
             "|---|---|---|---|---|---|---|"]
    for s, now in zip(result["samples"], result["errors_with_current_weights"], strict=True):
        before = s["estimate"]
        lc, lut, f = now.get("logic_cells", {}), now["lut4"], now.get("fmax_mhz", {})
        lines.append(
            f"| {now['design']} | {s.get('logic_cells', '-')} | {before.get('logic_cells', '-')} "
            f"({pct(before.get('logic_cells'), s.get('logic_cells'))}) -> {lc.get('estimate', '-')} "
            f"({pct(lc.get('estimate'), s.get('logic_cells'))}) | {s['lut4']} | {before['lut4']} "
            f"({pct(before['lut4'], s['lut4'])}) -> {lut['estimate']} ({pct(lut['estimate'], s['lut4'])}) | "
            f"{s.get('fmax_mhz', '-')} | {before.get('fmax_mhz') or '-'} "
            f"({pct(before.get('fmax_mhz'), s.get('fmax_mhz'))})"
            f" -> {f.get('estimate', '-')} ({pct(f.get('estimate'), s.get('fmax_mhz'))}) |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from asqhw.atomic import atomic_write_text
    from hw.eda.boards import get_board

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--designs", default=None, help="BITSxPExSIMD, comma-separated")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "calibrate")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--refit", action="store_true", help="recompute fit and errors of a recorded file")
    parser.add_argument("--reprice", action="store_true",
                        help="with --refit: price every recorded design again with today's estimator (its RTL "
                        "must be the samples' commit; the priced kinds change when the pricing rules do)")
    parser.add_argument("--update", action="store_true",
                        help="keep the recorded designs not in --designs (each measured design replaces its record)")
    parser.add_argument("--table", action="store_true", help="print the per-design Markdown table of a recorded file")
    args = parser.parse_args(argv)
    family = get_board(args.board).family
    path = args.out or ROOT / "benchmarks" / "results" / f"estimate_calibration_{args.board}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    samples = earlier.get("samples", []) if args.refit or args.update else []
    arrays = earlier.get("arrays", [])

    def write():
        result = {"board": args.board, **({"rtl_note": earlier["rtl_note"]} if "rtl_note" in earlier else {}),
                  "samples": samples, "arrays": arrays,
                  "fitted": fit(samples, args.board, arrays) if samples else {},
                  "errors_with_current_weights": errors(samples, family),
                  "array_errors_with_current_weights": array_errors(arrays, family),
                  "largest_errors_with_current_weights": largest_errors(errors(samples, family)),
                  "note": "fmax_mhz: nextpnr, one seed, at the PLL clock_mhz; logic_cells: nextpnr's packed "
                          "count; lut4/ff: Yosys; estimate: what the estimator said when the sample ran"}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=1) + "\n")
        return result

    if args.table:
        result = json.loads(path.read_text())
        print(markdown_table(result))
        return result
    if args.refit and args.reprice:
        for sample in samples:
            reprice(sample, args.board)
    if not args.refit:
        for design in (args.designs or DESIGNS[args.board]).split(","):
            bits, pe, simd = (int(x) for x in design.split("x"))
            sample = measure(bits, pe, simd, args.board, args.build)
            samples[:] = [s for s in samples if (s["bits"], s["pe"], s["simd"]) != (bits, pe, simd)] + [sample]
            print(f"{design}: {sample.get('logic_cells')} LC (estimate {sample['estimate'].get('logic_cells')}), "
                  f"{sample['lut4']} LUT4 (estimate {sample['estimate']['lut4']}), {sample['ff']} FF, "
                  f"Fmax {sample.get('fmax_mhz')} MHz (estimate {sample['estimate'].get('fmax_mhz')}), "
                  f"{sample['wall_s']} s", flush=True)
            write()
    result = write()
    print(json.dumps(result["fitted"]))
    for row in result["errors_with_current_weights"]:
        print(row)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
