"""``asqhw fit BOARD``: the PE x SIMD with the most inferences per second that fits and meets the clock.

Search: every power-of-two PE and SIMD up to a limit that the generator accepts for the bundle is a
candidate; candidates are tried in order of inferences per second at the board clock (the
generator's cycle model), best first. The resource estimate (:mod:`hw.eda.estimate`) skips those that
clearly cannot fit (LUT4 over 1.25x the device or more block RAMs than it has), and the rest are
placed and routed, one after the other, until one fits and meets the board clock. Every try is
kept in ``fit.json``.
"""

import json
from pathlib import Path

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError
from hw.eda.boards import get_board

#: An estimate this far over the device is not worth placing and routing.
ESTIMATE_SLACK = 1.25


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
                        "inferences_per_s": spec.clock_mhz * 1e6 / cycles, "estimate": est})
    out.sort(key=lambda c: (-c["inferences_per_s"], c["pe"] * c["simd"]))
    return out


def clearly_too_big(cand: dict, board: str) -> str | None:
    """Why the estimate rules ``cand`` out, or None."""
    spec = get_board(board)
    est = cand["estimate"]
    if est["lut4"] > ESTIMATE_SLACK * spec.capacity["lut4"]:
        return f"estimate {est['lut4']} LUT4 > {ESTIMATE_SLACK} x {spec.capacity['lut4']}"
    if est["bram"] > spec.capacity["bram"]:
        return f"estimate {est['bram']} block RAMs > {spec.capacity['bram']}"
    return None


def find_fit(bundle, board: str, *, mul=None, max_par: int = 16, seeds: int = 1, out_dir) -> dict:
    """Search as the module docstring says; write ``out_dir/fit.json``; return it."""
    from hw.eda.synth import synthesize_top

    spec = get_board(board)
    if not spec.is_fpga:
        raise UserError(f"fit needs an FPGA board (icebreaker, ulx3s), not {board!r}")
    out_dir = Path(out_dir)
    tried, best = [], None
    for cand in candidates(bundle, board, mul=mul, max_par=max_par):
        reason = clearly_too_big(cand, board)
        entry = {k: cand[k] for k in ("pe", "simd", "cycles_per_inference", "inferences_per_s")}
        entry["estimate_lut4"] = cand["estimate"]["lut4"]
        if reason:
            entry["skipped"] = reason
            tried.append(entry)
            continue
        from hw.eda.generate import build_top

        top = build_top(bundle, pe=cand["pe"], simd=cand["simd"], mul=mul)
        design = {"top": "asq_accel", "pe": cand["pe"], "simd": cand["simd"]}
        try:
            report = synthesize_top(top, board, out_dir / f"pe{cand['pe']}-simd{cand['simd']}", design=design,
                                    macs_per_cycle=cand["pe"] * cand["simd"],
                                    cycles=cand["cycles_per_inference"], input_bytes=top.plan.input_codes,
                                    seeds=seeds, progress=False)
        except UserError as err:
            entry["failed"] = str(err).splitlines()[1:3]
            tried.append(entry)
            continue
        entry.update(lut4=report["resources"]["lut4"]["used"], fmax_mhz=report["fmax_mhz"]["median"],
                     clock_mhz=spec.clock_mhz)
        tried.append(entry)
        best = entry
        break
    result = {"board": board, "best": best, "tried": tried}
    atomic_write_text(out_dir / "fit.json", json.dumps(result, indent=1) + "\n")
    if best is None:
        raise UserError(f"no PE x SIMD up to {max_par} fits {board} at {spec.clock_mhz} MHz; see "
                        f"{out_dir / 'fit.json'}")
    return result
