"""``asqhw fit BOARD``: the PE x SIMD with the most inferences per second that fits and meets the clock.

Search: every power-of-two PE and SIMD up to a limit that the generator accepts for the bundle is a
candidate; candidates are tried in order of inferences per second at the board clock (the
generator's cycle model), best first. The resource estimate (:mod:`hw.eda.estimate`) rules out
every candidate that might not fit: a design is placed only when its logic cells, and its LUT4,
estimated higher by the estimate's largest measured error (:data:`hw.eda.estimate.ESTIMATE_ERROR`),
still fit the device, and its block RAMs do. So fit never places and routes a design that the estimate,
off by as much as on its worst calibration design, would put over the device (a design that fits
only by less than that margin is left to ``asqhw synth``). The rest are placed and routed, one after the other,
clocked by the board's PLL at the fastest setting that meets timing (the search starts at the
estimated Fmax), until one fits and meets its clock. Every try is kept in ``fit.json``, with its
estimated logic cells and Fmax beside what place and route measured.
"""

import contextlib
import json
import os
import sys
from pathlib import Path

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError
from hw.eda.boards import get_board

#: LUT4 margin of a family without a measured error.
ESTIMATE_SLACK = 1.25


def _slack(family: str, key: str, default: float) -> float:
    from hw.eda.estimate import ESTIMATE_ERROR

    err = ESTIMATE_ERROR.get(family, {}).get(key)
    return default if err is None else round(1 + err, 3)


#: Per family: a candidate is placed only when its logic-cell estimate times this factor fits the
#: device (1 + the largest error of the logic-cell estimate against nextpnr on the calibration designs).
LC_SLACK = {family: _slack(family, "logic_cells", 1.10) for family in ("ice40", "ecp5")}
#: The same for the LUT4 estimate (against Yosys' LUT4).
LUT4_SLACK = {family: _slack(family, "lut4", ESTIMATE_SLACK) for family in ("ice40", "ecp5")}


def candidates(bundle, board: str, *, mul=None, max_par: int = 16) -> list[dict]:
    """Valid (pe, simd) with cycles, inferences/s at the board clock and the estimate, best first."""
    from hw.eda.estimate import estimate_accelerator
    from hw.rtl.plan import make_plan

    spec = get_board(board)
    sizes = [1 << k for k in range(max_par.bit_length()) if 1 << k <= max_par]
    out = []
    for pe in sizes:
        for simd in sizes:
            try:
                plan = make_plan(bundle, pe=pe, simd=simd, mul=mul)
            except UserError:
                continue  # e.g. SIMD not dividing a layer's input channels
            est = estimate_accelerator(plan, board)
            cycles = est["cycles_per_inference"]
            out.append({"pe": pe, "simd": simd, "cycles_per_inference": cycles,
                        "inferences_per_s": spec.clock_mhz * 1e6 / cycles,
                        "inferences_per_s_at_estimated_fmax": round(est["fmax_mhz"] * 1e6 / cycles, 1)
                        if "fmax_mhz" in est else None,
                        "estimate": est})
    out.sort(key=lambda c: (-c["inferences_per_s"], c["pe"] * c["simd"]))
    return out


def clearly_too_big(cand: dict, board: str) -> str | None:
    """Why the estimate rules ``cand`` out (it might not fit), or None."""
    spec = get_board(board)
    est = cand["estimate"]
    lc_slack = LC_SLACK.get(spec.family, 1.10)
    cap = spec.capacity["logic"]
    if "logic_cells" in est and est["logic_cells"] * lc_slack > cap:
        return (f"estimate {est['logic_cells']} logic cells, {round(est['logic_cells'] * lc_slack)} if it is "
                f"{100 * (lc_slack - 1):.0f} % low (its largest measured error) > {cap}")
    lut_slack = LUT4_SLACK.get(spec.family, ESTIMATE_SLACK)
    if est["lut4"] * lut_slack > spec.capacity["lut4"]:
        return (f"estimate {est['lut4']} LUT4, {round(est['lut4'] * lut_slack)} if it is "
                f"{100 * (lut_slack - 1):.0f} % low > {spec.capacity['lut4']}")
    if est["bram"] > spec.capacity["bram"]:
        return f"estimate {est['bram']} block RAMs > {spec.capacity['bram']}"
    return None


@contextlib.contextmanager
def _tool_output_to(log_path):
    """Send this process's stdout and stderr (so the tools' own output) to ``log_path`` for a while.

    Redirected at the file-descriptor level, because Yosys and nextpnr are subprocesses that write
    to the descriptors they inherit: a candidate expected to fail then prints no raw tool error;
    its figures are summarised instead, and the log keeps the tools' words.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _why_failed(err: UserError) -> list[str]:
    """The figures of a failed candidate: the problem lines of the synthesis error, without tool noise."""
    lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
    return [ln for ln in lines if not ln.startswith(("ERROR", "Fix:"))][:2] or lines[:1]


def counts_text(result: dict) -> str:
    """E.g. ``"12 candidates: 7 ruled out by the estimate, 4 placed and routed (3 did not fit or missed the
    clock, 1 fits), 1 slower not tried"``."""
    c = result["counts"]
    text = (f"{c['candidates']} candidates: {c['skipped']} ruled out by the estimate, {c['routed']} placed "
            f"and routed ({c['failed']} did not fit or missed the clock")
    text += ", 1 fits)" if result["best"] is not None else ")"
    untried = c["candidates"] - c["skipped"] - c["routed"]
    return text + (f", {untried} slower not tried" if untried else "")


def find_fit(bundle, board: str, *, mul=None, max_par: int = 16, seeds: int = 1, out_dir, log=None,
             clock="auto") -> dict:
    """Search as the module docstring says; write ``out_dir/fit.json``; return it.

    ``clock``: how each candidate is clocked (:func:`hw.eda.synth.synthesize_top`; default the PLL search).

    ``log`` (a callable taking a line, or None) hears one line per placed-and-routed candidate with
    honest counts; the tools' own output goes to ``out_dir/pe<P>-simd<S>.log``. A search that finds
    nothing never replaces a ``fit.json`` that holds a result: it is written to ``fit-failed.json``.
    """
    from hw.eda.generate import build_top
    from hw.eda.synth import synthesize_top

    spec = get_board(board)
    if not spec.is_fpga:
        raise UserError(f"fit needs an FPGA board (icebreaker, ulx3s), not {board!r}")
    if max_par < 1:
        raise UserError(f"the largest PE and SIMD tried must be at least 1, not {max_par}")
    say = log or (lambda text: None)
    out_dir = Path(out_dir)
    cands = candidates(bundle, board, mul=mul, max_par=max_par)
    if not cands:
        raise UserError(f"no PE x SIMD up to {max_par} suits this bundle (each must be a power of two "
                        f"dividing every layer's channels); nothing written to {out_dir}")
    to_route = [c for c in cands if clearly_too_big(c, board) is None]
    say(f"fit {board}: {len(cands)} candidates up to PE, SIMD {max_par}; {len(cands) - len(to_route)} ruled "
        f"out by the resource estimate; placing and routing up to {len(to_route)}, best first")
    tried, best, routed = [], None, 0
    for cand in cands:
        reason = clearly_too_big(cand, board)
        entry = {k: cand[k] for k in ("pe", "simd", "cycles_per_inference", "inferences_per_s")}
        entry["estimate_lut4"] = cand["estimate"]["lut4"]
        entry["estimate_logic_cells"] = cand["estimate"].get("logic_cells")
        entry["estimate_fmax_mhz"] = cand["estimate"].get("fmax_mhz")
        if reason:
            entry["skipped"] = reason
            tried.append(entry)
            continue
        routed += 1
        name = f"pe{cand['pe']}-simd{cand['simd']}"
        say(f"[{routed}/{len(to_route)}] PE={cand['pe']} SIMD={cand['simd']}: "
            f"{cand['inferences_per_s']:.0f} inferences/s at {spec.clock_mhz} MHz if it fits (estimate "
            f"{cand['estimate'].get('logic_cells', '?')} logic cells, {cand['estimate']['lut4']} LUT4, Fmax "
            f"~{cand['estimate'].get('fmax_mhz', '?')} MHz); placing and routing")
        top = build_top(bundle, pe=cand["pe"], simd=cand["simd"], mul=mul)
        design = {"top": "asq_accel", "pe": cand["pe"], "simd": cand["simd"]}
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _tool_output_to(out_dir / f"{name}.log"):
                report = synthesize_top(top, board, out_dir / name, design=design,
                                        macs_per_cycle=cand["pe"] * cand["simd"],
                                        cycles=cand["cycles_per_inference"], input_bytes=top.plan.input_codes,
                                        estimate=cand["estimate"], seeds=seeds, progress=False, clock=clock)
        except UserError as err:
            entry["failed"] = _why_failed(err)
            tried.append(entry)
            say(f"    does not work: {'; '.join(entry['failed'])} (tool log: {out_dir / name}.log)")
            continue
        clock_mhz = report.get("clock_mhz", spec.clock_mhz)
        entry.update(lut4=report["resources"]["lut4"]["used"], fmax_mhz=report["fmax_mhz"]["median"],
                     logic_cells=report["resources"].get("logic_cells", {}).get("used"),
                     fmax_min_mhz=report["fmax_mhz"].get("min"), clock_mhz=clock_mhz, clock=report.get("clock"),
                     inferences_per_s_at_clock=round(clock_mhz * 1e6 / cand["cycles_per_inference"], 1))
        tried.append(entry)
        best = entry
        say(f"    fits: {entry['logic_cells']} logic cells, {entry['lut4']} LUT4, Fmax {entry['fmax_mhz']:.1f} MHz "
            f">= clock {entry['clock_mhz']:g} MHz")
        break
    skipped = sum("skipped" in t for t in tried)
    result = {"board": board, "best": best, "tried": tried,
              "counts": {"candidates": len(cands), "skipped": skipped, "routed": routed,
                         "failed": sum("failed" in t for t in tried)}}
    result["counts_text"] = counts_text(result)
    text = json.dumps(result, indent=1) + "\n"
    target = out_dir / "fit.json"
    if best is None and _holds_a_result(target):
        target = out_dir / "fit-failed.json"
    atomic_write_text(target, text)
    if best is None:
        kept = f"; the earlier result in {out_dir / 'fit.json'} is kept" if target.name != "fit.json" else ""
        raise UserError(f"no PE x SIMD up to {max_par} fits {board} at {spec.clock_mhz} MHz "
                        f"({result['counts_text']}); see {target}{kept}")
    return result


def _holds_a_result(path: Path) -> bool:
    """Whether ``path`` is a fit.json with a fitting candidate (so a failed search must not replace it)."""
    try:
        return json.loads(path.read_text()).get("best") is not None
    except (OSError, ValueError, AttributeError):
        return False
