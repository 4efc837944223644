"""The resource and Fmax estimate against recorded place-and-route figures, and ``asqhw fit`` judging by it.

No tool runs here: the recorded figures are ``benchmarks/results/estimate_calibration_<board>.json``
(``benchmarks/calibrate_lc.py``: Yosys, nextpnr's packed logic cells and one seed's Fmax at several
design points), ``docs/data/hardware-icebreaker-b3.json`` and ``docs/data/synth-ulx3s-b3-100mhz.json``
(3-seed ``asqhw synth`` runs of the default design). The synth-marked test in ``tests/test_synth.py``
packs the default design afresh.
"""

import json
from pathlib import Path

import pytest

from asqhw.errors import UserError
from hw.eda import estimate
from hw.eda.boards import get_board

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = {board: ROOT / "benchmarks" / "results" / f"estimate_calibration_{board}.json"
               for board in ("icebreaker", "ulx3s")}
#: What the estimate must reach on the default design (BITS 3, PE 4 x SIMD 4) against place and route.
DEFAULT_DESIGN_TOLERANCE = 0.10


def _samples(board):
    return json.loads(CALIBRATION[board].read_text())["samples"]


def _errors(sample, family, capacity):
    est = estimate.estimate_from_kinds(sample["lut4_by_kind"], sample["ff_estimate_raw"], family, capacity=capacity)
    out = {"lut4": (est["lut4"] - sample["lut4"]) / sample["lut4"]}
    if "logic_cells" in sample and "logic_cells" in est:
        out["logic_cells"] = (est["logic_cells"] - sample["logic_cells"]) / sample["logic_cells"]
    if "fmax_mhz" in sample and est.get("fmax_mhz"):
        out["fmax_mhz"] = (est["fmax_mhz"] - sample["fmax_mhz"]) / sample["fmax_mhz"]
    return out


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_every_calibration_design_is_within_the_error_the_estimator_states(board):
    """The stated error (ESTIMATE_ERROR: fit's margin, the lines' +-) is never better than measured."""
    spec = get_board(board)
    samples = _samples(board)
    assert len(samples) >= 5
    seen = set()
    for sample in samples:
        for key, err in _errors(sample, spec.family, spec.capacity["logic"]).items():
            stated = estimate.ESTIMATE_ERROR[spec.family][key]
            assert abs(err) <= stated, (board, sample["bits"], sample["pe"], sample["simd"], key, err, stated)
            seen.add(key)
    assert {"logic_cells", "lut4", "fmax_mhz"} <= seen  # every stated figure was measured


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_default_design_logic_cells_and_lut4_within_10_percent_of_place_and_route(board):
    spec = get_board(board)
    (default,) = [s for s in _samples(board) if (s["bits"], s["pe"], s["simd"]) == (3, 4, 4)]
    errors = _errors(default, spec.family, spec.capacity["logic"])
    assert abs(errors["logic_cells"]) <= DEFAULT_DESIGN_TOLERANCE, errors
    assert abs(errors["lut4"]) <= DEFAULT_DESIGN_TOLERANCE, errors


def test_the_link_input_buffer_counts_in_the_block_ram_estimate():
    """9 images in flight at 12 Mbaud (docs/data/synth-icebreaker-b3-12mbaud-class-window9-3seeds.json): the
    link's 512-byte FIFO took a 30th block RAM beside the accelerator's 29; the estimate counts it."""
    from hw.eda.estimate import estimate_accelerator, memory_blocks
    from hw.eda.synth import load_bundle_for
    from hw.rtl.plan import make_plan

    record = ROOT / "docs" / "data" / "synth-icebreaker-b3-12mbaud-class-window9-3seeds.json"
    report = json.loads(record.read_text())["report"]
    assert report["link"]["window"] == 9 and report["link"]["fifo_bytes"] == 512
    design = report["design"]
    plan = make_plan(load_bundle_for(None, design["bits"]), pe=design["pe"], simd=design["simd"])
    est = estimate_accelerator(plan, "icebreaker", link_fifo_bytes=report["link"]["fifo_bytes"])
    assert est["bram"] == report["resources"]["block_ram"]["used"] == 30
    assert estimate_accelerator(plan, "icebreaker")["bram"] == 29
    # 511 bytes: one 512 x 8 block on the iCE40, none on a generic target
    assert memory_blocks(8, 511, "ice40", written=True) == 1 and memory_blocks(8, 511, "generic", written=True) == 0


def test_default_design_estimate_against_its_recorded_three_seed_synthesis():
    """The estimate of today's RTL against docs/data/hardware-icebreaker-b3.json (the default design placed
    and routed over 3 seeds at its PLL clock): logic cells and LUT4 within 10 %, Fmax within the stated error."""
    from hw.eda.estimate import estimate_accelerator
    from hw.eda.synth import load_bundle_for
    from hw.rtl.plan import DEFAULT_PE, DEFAULT_SIMD, make_plan

    recorded = json.loads((ROOT / "docs" / "data" / "hardware-icebreaker-b3.json").read_text())["report"]
    design = recorded["design"]
    plan = make_plan(load_bundle_for(None, design["bits"]), pe=design["pe"], simd=design["simd"])
    assert (design["pe"], design["simd"]) == (DEFAULT_PE, DEFAULT_SIMD)
    est = estimate_accelerator(plan, "icebreaker")
    used = {k: recorded["resources"][k]["used"] for k in ("logic_cells", "lut4")}
    for key in used:
        assert abs(est[key] - used[key]) <= DEFAULT_DESIGN_TOLERANCE * used[key], (key, est[key], used[key])
    fmax = recorded["fmax_mhz"]["min"]
    assert abs(est["fmax_mhz"] - fmax) <= estimate.ESTIMATE_ERROR["ice40"]["fmax_mhz"] * fmax, (est["fmax_mhz"], fmax)


def test_ulx3s_default_design_estimate_against_its_recorded_three_seed_synthesis():
    """The ULX3S estimate of today's RTL against docs/data/synth-ulx3s-b3-100mhz.json (the default design
    placed and routed over 3 seeds at a 100 MHz PLL clock): logic cells and LUT4 within 10 %, Fmax
    within the stated error of the slowest seed."""
    from hw.eda.estimate import estimate_accelerator
    from hw.eda.synth import load_bundle_for
    from hw.rtl.plan import DEFAULT_PE, DEFAULT_SIMD, make_plan

    recorded = json.loads((ROOT / "docs" / "data" / "synth-ulx3s-b3-100mhz.json").read_text())["report"]
    design = recorded["design"]
    assert (design["bits"], design["pe"], design["simd"]) == (3, DEFAULT_PE, DEFAULT_SIMD)
    est = estimate_accelerator(make_plan(load_bundle_for(None, 3), pe=DEFAULT_PE, simd=DEFAULT_SIMD), "ulx3s")
    for key in ("logic_cells", "lut4"):
        used = recorded["resources"][key]["used"]
        assert abs(est[key] - used) <= DEFAULT_DESIGN_TOLERANCE * used, (key, est[key], used)
    fmax = recorded["fmax_mhz"]["min"]
    assert abs(est["fmax_mhz"] - fmax) <= estimate.ESTIMATE_ERROR["ecp5"]["fmax_mhz"] * fmax, (est["fmax_mhz"], fmax)


def test_the_estimate_line_states_the_measured_error():
    line = estimate.format_estimate({"logic_cells": 5000, "lut4": 4000, "ff": 1800, "bram": 29, "dsp": 7,
                                     "fmax_mhz": 28.0}, "ice40")
    err = estimate.ESTIMATE_ERROR["ice40"]
    assert f"5000 logic cells (+-{100 * err['logic_cells']:.0f} %)" in line
    assert f"Fmax ~28 MHz (+-{100 * err['fmax_mhz']:.0f} %)" in line


def _fake_candidates(monkeypatch, cells_list):
    """``candidates`` that offers designs of the given estimated logic cells, best first."""
    from hw.eda import fit

    cands = [{"pe": 1 << i, "simd": 1, "cycles_per_inference": 1000 * (i + 1),
              "inferences_per_s": 12e6 / (1000 * (i + 1)),
              "estimate": {"logic_cells": lc, "lut4": round(0.8 * lc), "bram": 1, "fmax_mhz": 30.0}}
             for i, lc in enumerate(cells_list)]
    monkeypatch.setattr(fit, "candidates", lambda *a, **k: cands)
    monkeypatch.setattr("hw.eda.generate.build_top", lambda bundle, **k: type("Top", (), {"plan": type(
        "Plan", (), {"input_codes": 64})()})())
    return cands


def test_fit_never_places_a_design_that_might_not_fit_by_its_estimate(tmp_path, monkeypatch):
    """A candidate is placed only when its logic-cell estimate, raised by the largest measured error, fits."""
    from hw.eda import fit

    cap = get_board("icebreaker").capacity["logic"]
    margin = fit.LC_SLACK["ice40"]
    assert margin == pytest.approx(1 + estimate.ESTIMATE_ERROR["ice40"]["logic_cells"])
    over = cap + 1  # over the device as estimated
    might_not_fit = int(cap / margin) + 1  # under the device, but over it if the estimate is that much low
    fits = int(cap / margin)
    _fake_candidates(monkeypatch, [over, might_not_fit, fits])
    placed = []

    def synthesize_top(top, board, out_dir, *, design, **kw):
        placed.append(kw["estimate"]["logic_cells"])
        return {"resources": {"lut4": {"used": 4000}, "logic_cells": {"used": fits}}, "clock_mhz": 30.0,
                "fmax_mhz": {"median": 31.0, "min": 30.5}, "clock": {"source": "pll"}}

    monkeypatch.setattr("hw.eda.synth.synthesize_top", synthesize_top)
    result = fit.find_fit(None, "icebreaker", out_dir=tmp_path)
    assert placed == [fits]  # neither of the first two reached place and route
    assert all("logic cells" in t["skipped"] for t in result["tried"][:2])
    assert result["best"]["estimate_logic_cells"] == fits


def test_fit_keeps_searching_when_place_and_route_says_a_candidate_does_not_fit(tmp_path, monkeypatch):
    from hw.eda import fit

    _fake_candidates(monkeypatch, [4000, 3000])
    placed = []

    def synthesize_top(top, board, out_dir, *, design, **kw):
        placed.append(kw["estimate"]["logic_cells"])
        if kw["estimate"]["logic_cells"] == 4000:
            raise UserError("does not place\n  ICESTORM_LC: 5300 used > 5280 available (nextpnr)")
        return {"resources": {"lut4": {"used": 2400}, "logic_cells": {"used": 3000}}, "clock_mhz": 30.0,
                "fmax_mhz": {"median": 31.0, "min": 30.5}, "clock": {"source": "pll"}}

    monkeypatch.setattr("hw.eda.synth.synthesize_top", synthesize_top)
    result = fit.find_fit(None, "icebreaker", out_dir=tmp_path)
    assert placed == [4000, 3000]
    assert "failed" in result["tried"][0] and result["best"]["logic_cells"] == 3000


def test_fit_places_nothing_when_every_estimate_might_not_fit(tmp_path, monkeypatch):
    from hw.eda import fit

    cap = get_board("icebreaker").capacity["logic"]
    _fake_candidates(monkeypatch, [int(cap / fit.LC_SLACK["ice40"]) + k for k in (1, 100, 1000)])
    monkeypatch.setattr("hw.eda.synth.synthesize_top", lambda *a, **k: pytest.fail("placed a design the "
                                                                                    "estimate rules out"))
    with pytest.raises(UserError, match="3 ruled out by the estimate, 0 placed"):
        fit.find_fit(None, "icebreaker", out_dir=tmp_path)


def test_fit_rules_out_the_bits_4_default_design_on_the_icebreaker():
    """BITS 4 at PE 4 x SIMD 4 does not fit the UP5K (31 block RAMs and 5371 logic cells measured, of 30
    and 5280): the estimate says so before any place and route."""
    from hw.eda.fit import clearly_too_big
    from hw.eda.synth import load_bundle_for
    from hw.rtl.plan import make_plan

    est = estimate.estimate_accelerator(make_plan(load_bundle_for(None, 4), pe=4, simd=4), "icebreaker")
    assert est["bram"] == 31
    assert clearly_too_big({"estimate": est}, "icebreaker") is not None
