"""``benchmarks/bench_hw.py`` without a tool run: rows from recorded-shaped reports, side by side."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hw", ROOT / "benchmarks" / "bench_hw.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(ok=True, mhz=28.5, lc=5076):
    report = {"ok": ok, "design": {"bits": 3, "n_logits": 10}, "cycles_per_inference": 6671,
              "macs_per_cycle": 16, "clock_mhz": mhz,
              "clock": {"source": "pll", "pll": {"params": {"DIVF": 75}}, "slack_ns": {"min": 0.1}},
              "estimate": {"logic_cells": 5043, "lut4": 4193, "cycles_mac_bound": 6144},
              "estimate_vs_synthesis": {"logic_cells": {"error": -0.007}},
              "resources": {"lut4": {"used": 4133}, "block_ram": {"used": 29}, "dsp": {"used": 7},
                            "flip_flops": {"used": 1847}}}
    if ok:
        report["resources"]["logic_cells"] = {"used": lc, "available": 5280}
        report["fmax_mhz"] = {"median": 28.78, "min": 28.58}
        report["untimed_paths"] = {"count": 0}
    else:
        report["problems"] = ["block_ram: 31 used > 30 available",
                              "ICESTORM_LC: 5378 used > 5280 available (nextpnr)"]
    return report


def test_a_row_gives_the_bench_figures_and_a_failed_design_its_packed_logic_cells():
    bench = _bench()
    row = bench.summarize(_report())
    assert (row["logic_cells"], row["lut4"], row["bram"], row["dsp"], row["untimed_paths"]) == (5076, 4133, 29, 7, 0)
    assert row["fmax_mhz"]["min"] == 28.58 and row["clock"]["source"] == "pll"
    assert row["mac_array_use"] == round(6144 / 6671, 3)
    assert row["images_per_s_compute"] == round(28.5e6 / 6671, 1)
    assert row["estimate_error"] == {"logic_cells": -0.007}
    failed = bench.summarize(_report(ok=False))
    assert failed["ok"] is False and failed["logic_cells"] == 5378 and "images_per_s_compute" not in failed


def test_side_by_side_pairs_the_baseline_and_the_current_design_per_board_and_bits():
    bench = _bench()
    rows = [{"side": side, "commit": c, "board": "icebreaker", "bits": bits, **bench.summarize(_report(ok=bits == 3))}
            for bits in (3, 4) for side, c in (("baseline", "ccf6ebb"), ("current", "abc1234"))]
    pairs = bench.side_by_side(rows)
    assert [(p["board"], p["bits"]) for p in pairs] == [("icebreaker", 3), ("icebreaker", 4)]
    assert pairs[0]["baseline"]["commit"] == "ccf6ebb" and pairs[0]["current"]["logic_cells"] == 5076
    assert pairs[1]["current"]["ok"] is False and pairs[1]["current"]["problems"]
    table = bench.table(pairs)
    assert table.count("\n") == 1 + 4 and "| icebreaker | 4 | current abc1234 | False |" in table


def test_the_fast_link_row_sits_beside_the_two_designs_and_counts_the_links_images():
    bench = _bench()
    fast = _report(mhz=36.0)
    fast["link"] = {"kind": "uart", "baud": 12_000_000, "reply": "class", "window": 9, "bytes_in_per_image": 64,
                    "bytes_out_per_image": 1, "bytes_per_s": 1.2e6, "images_per_s_pipelined": 18750.0,
                    "images_per_s_one_at_a_time": 18461.5}
    rows = [{"side": side, "commit": "abc1234", "board": "icebreaker", "bits": 3, **bench.summarize(report)}
            for side, report in (("baseline", _report()), ("current", _report()), ("fast_link", fast))]
    (pair,) = bench.side_by_side(rows)
    # 9 images in flight: the line carries 18,750 images/s, more than the 36 MHz clock computes
    assert pair["fast_link"]["images_per_s_over_link"] == round(36e6 / 6671, 1)
    assert "images_per_s_over_link" not in pair["current"] or pair["current"]["images_per_s_over_link"] is None
    assert bench.table([pair]).splitlines()[-1].startswith("| icebreaker | 3 | fast_link abc1234 | True | 36 (pll)")
