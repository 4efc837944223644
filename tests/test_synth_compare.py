"""The MAC comparison: its designs compute what they should, its options and its report page."""

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from asqhw.errors import UserError
from golden import arith
from studies.compare import (
    DESIGNS,
    PrivateTableArray,
    Row,
    TwoAccPostArray,
    acc_width_for,
    make_array,
    synth_opts_for,
)
from studies.results import ratios, render, table


def _post_product(a, code, bits, frac):
    """POST product by the spec (docs/design.md 2.2), from golden's table: independent of the RTL."""
    mbits = bits - 1
    m, neg = code & ((1 << mbits) - 1), code >> mbits
    if m == 0:
        return 0
    e = m - 1
    table = [int(v) for v in arith.post_table(bits, frac)]
    mag = (a << (e // 2)) << frac if e % 2 == 0 else table[a] << ((e - 1) // 2)
    return -mag if neg else mag



async def _feed_groups(ctx, dut, acts, codes):
    """Drive one accumulation group: ``acts[t, s]`` and ``codes[t, p, s]`` for t = 0 .. n-1, then idle."""
    n, pe, simd = codes.shape
    for t in range(n):
        ctx.set(dut.valid, 1)
        ctx.set(dut.first, int(t == 0))
        ctx.set(dut.last, int(t == n - 1))
        for s in range(simd):
            ctx.set(dut.a[s], int(acts[t, s]))
            for p in range(pe):
                ctx.set(dut.w[p][s], int(codes[t, p, s]))
        await ctx.tick()
    ctx.set(dut.valid, 0)

def test_private_table_array_equals_the_spec_with_a_pe_skew():
    bits, pe, simd, frac = 3, 3, 2, 6
    dut = PrivateTableArray(bits, bits, pe=pe, simd=simd, acc_width=acc_width_for("post", bits, frac),
                            frac_bits=frac)
    rng = np.random.default_rng(1)
    n = 5
    acts = rng.integers(0, 1 << bits, size=(n, simd))
    codes = rng.integers(0, 1 << bits, size=(n, pe, simd))
    expected = [sum(_post_product(int(acts[t, s]), int(codes[t, p, s]), bits, frac)
                    for t in range(n) for s in range(simd)) for p in range(pe)]
    seen = {}

    async def bench(ctx):
        await _feed_groups(ctx, dut, acts, codes)
        for cycle in range(n, n + pe + 4):
            await ctx.tick()
            for p in range(pe):
                seen.setdefault(p, []).append((cycle, ctx.get(dut.acc[p])))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for p in range(pe):
        # PE p's sum is complete p cycles after PE 0's (2 cycles after the last input)
        done_at = n + 1 + p
        value = dict(seen[p])[done_at]
        assert value == expected[p], p


def test_two_sum_post_array_equals_its_spec():
    bits, pe, simd, frac = 4, 2, 3, 6
    dut = TwoAccPostArray(bits, bits, pe=pe, simd=simd, acc_width=40, frac_bits=frac)
    rng = np.random.default_rng(2)
    n = 4
    acts = rng.integers(0, 1 << bits, size=(n, simd))
    codes = rng.integers(0, 1 << bits, size=(n, pe, simd))

    def split(a, code):  # (even part, odd part) of one product, by the spec
        m, neg = code & 7, code >> 3
        if m == 0:
            return 0, 0
        e = m - 1
        v = (a << (e // 2)) * (-1 if neg else 1)
        return (v, 0) if e % 2 == 0 else (0, v)

    expected = []
    for p in range(pe):
        parts = [split(int(acts[t, s]), int(codes[t, p, s])) for t in range(n) for s in range(simd)]
        expected.append((sum(x for x, _ in parts), sum(y for _, y in parts)))
    got = []

    async def bench(ctx):
        await _feed_groups(ctx, dut, acts, codes)
        await ctx.tick().repeat(2)  # products, sums
        got.extend((ctx.get(dut.acc[p]), ctx.get(dut.acc_odd[p])) for p in range(pe))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected


def test_accumulator_width_is_product_plus_guard_bits():
    # 3-bit POST, F = 6: largest product T[7] << 0 = 634 or (7 << 1) << 6 = 896 -> 10 bits + sign
    assert acc_width_for("post", 3, 6) == (896).bit_length() + 1 + math.ceil(math.log2(144))
    # F = 2: T[7] = 40 or (7 << 1) << 2 = 56 -> 6 bits + sign
    assert acc_width_for("post", 3, 2) == (56).bit_length() + 1 + math.ceil(math.log2(144)) == 15
    # no F given: the shipped digits-b3 bundle's F = 3: T[7] = 79 or (7 << 1) << 3 = 112 -> 7 bits + sign
    assert acc_width_for("post", 3) == (112).bit_length() + 1 + math.ceil(math.log2(144)) == 16
    assert acc_width_for("int", 4) == (15 * 8).bit_length() + 1 + 8


def test_designs_and_synthesis_options():
    assert list(DESIGNS) == ["post", "post-private", "post-2acc", "pot", "int", "int-dsp"]
    assert synth_opts_for("int-dsp", "icebreaker") == "-dsp"
    assert synth_opts_for("int", "icebreaker") == ""
    assert synth_opts_for("int", "ulx3s").endswith("-nodsp")
    assert "-nodsp" not in synth_opts_for("int-dsp", "ulx3s")
    assert isinstance(make_array("post-private", 4, 2, 2), PrivateTableArray)
    with pytest.raises(UserError, match="design 'fp8' unknown"):
        make_array("fp8", 3, 2, 2)


def _rows():
    mk = lambda d, lut, acc: Row(d, "icebreaker", 3, 2, 2, lut, 10, 0, 0, 30.0, 28.0, True, acc)  # noqa: E731
    return [mk("post", 400, 95.0), mk("post-private", 420, 95.0), mk("pot", 360, 93.0), mk("int", 500, 96.0),
            Row("int-dsp", "icebreaker", 3, 2, 2, 100, 10, 0, 4, None, None, False, 96.0)]


def test_ratios_and_the_page_say_what_the_rows_say():
    (q,) = ratios(_rows())
    assert q["post_over_pot"] == pytest.approx(400 / 360)
    assert q["post_over_int"] == pytest.approx(0.8)
    assert q["private_over_shared"] == pytest.approx(1.05)
    text = render(_rows(), seeds=3)
    assert "| iCE40 UP5K | 3 | POST, one table per lane | 100.0 | 400 |" in text
    assert text.count("| - |\n") >= 5  # no estimate in these hand-made rows
    assert "does not fit" in text
    assert "1.11x a POT MAC in LUT4 (within the 1.25x budget)" in text
    assert "POST is 20 % cheaper than the uniform integer MAC in logic (0.80x)" in text
    assert table(_rows()).count("\n") == 6


def _sweep(f, lut, flips, bound):
    return Row("post", "icebreaker", 3, 2, 2, lut, 10, 0, 0, frac_bits=f, sweep=True, flips=flips,
               golden_top1=99.0, code_bound=bound)


@pytest.fixture
def no_shipped_bundles(tmp_path, monkeypatch):
    """No shipped bundle: the POST arrays take the exporter's first F (2 at 3 bits)."""
    import studies.compare as compare

    monkeypatch.setattr(compare, "SHIPPED", tmp_path)


def test_frac_sweep_rows_stay_out_of_the_main_table_and_fill_their_own(no_shipped_bundles):
    from studies.results import frac_table

    # POT costs 360 LUT4; budget 1.25x = 450. F = 1: 440 (1.222x) but E = 1.2; F = 2 (shipped): 480
    # (1.333x), E = 0.6.
    rows = _rows() + [_sweep(1, 440, 1, 1.2), _sweep(2, 480, 0, 0.6)]
    assert table(rows) == table(_rows())
    assert ratios(rows) == ratios(_rows())
    lines = frac_table(rows).splitlines()
    assert len(lines) == 2 + 2
    assert lines[2].startswith("| 3 | 1 | ") and "| 110.0 | 1.222 | 1 | 99.00 | 1.20 | no |" in lines[2]
    assert lines[3].startswith("| 3 | 2 (shipped) | ") and "| 120.0 | 1.333 | 0 | 99.00 | 0.60 | no |" in lines[3]
    text = render(rows, seeds=3)
    assert "At 3 bits the shipped F = 2 costs up to 1.33x POT, ABOVE the 1.25x budget; F <= 1 would be" in text
    assert "faithful (at most 2 flips and E < 1) only from F = 2 up" in text


def test_sweep_rows_are_kept_per_frac_bits_and_main_rows_replaced(tmp_path):
    from studies.compare import _save_rows, load_rows

    _save_rows(tmp_path, [_rows()[0], _sweep(2, 440, 1, 1.2)])
    newer = Row("post", "icebreaker", 3, 2, 2, 390, 10, 0, 0, frac_bits=4)
    _save_rows(tmp_path, [newer, _sweep(4, 480, 0, 0.6)])
    rows = load_rows(tmp_path / "rows.json")
    assert sorted((r.sweep, r.frac_bits, r.lut4) for r in rows) == [(False, 4, 390), (True, 2, 440), (True, 4, 480)]


def test_post_arrays_take_the_shipped_bundles_f(tmp_path, monkeypatch):
    import studies.compare as compare

    # the shipped digits bundles: F = 3 at BITS 3 (E >= 1 at F = 2), F = 2 at BITS 4
    assert [compare.shipped_frac_bits(b) for b in (3, 4)] == [3, 2]
    # no shipped POST bundle of that width: the exporter's first try
    monkeypatch.setattr(compare, "SHIPPED", tmp_path)
    assert [compare.shipped_frac_bits(b) for b in (2, 3, 4)] == [0, 2, 2]


def test_page_words_come_from_the_template_with_every_figure_filled(no_shipped_bundles):
    from studies.results import _blocks

    rows = _rows() + [_sweep(1, 400, 1, 1.2), _sweep(2, 430, 0, 0.6)]  # F = 2: 1.19x POT, within
    text = render(rows, seeds=1, epochs=5)
    assert "$" not in text
    assert "a 2 x 2 (PE x SIMD) MAC array" in text
    assert "median and minimum over 1 seed (median = minimum with one seed)" in text
    assert "(`quant`, same recipe and seed, 5 epochs instead of the recipe's 30 to keep the run short)" in text
    assert "for the shipped checkpoints that is BITS 3: F = 2 (marked \"shipped\")" in text
    assert "At 3 bits the shipped F = 2 keeps POST within 1.25x POT on every device (at most 1.19x)." in text
    assert "Signed product widths in these arrays (3 bits: POST 7, POT 6, int 6)" in text
    assert text.endswith("speaks the same protocol to the design simulated in-process.\n\n")
    no_sweep = render(_rows(), seeds=3)
    assert "same recipe and seed) trained once" in no_sweep
    assert "over 3 seeds (median" in no_sweep
    assert "## The POST table precision F\n\n\n\n\n\n## What it shows" in no_sweep  # no sweep, no F text
    # a shipped F above the budget with no cheaper F measured
    above = render(_rows() + [_sweep(2, 480, 0, 0.6), _sweep(3, 500, 0, 0.6)], seeds=3)
    assert "the shipped F = 2 costs up to 1.33x POT, ABOVE the 1.25x budget; no F of the sweep is within it." in above
    assert {"page", "analysis", "frac_text", "synth_section"} <= set(_blocks())


def test_the_synthesis_section_follows_the_analysis():
    from studies.results import synth_section

    report = {"design": {"bits": 3, "mul": "post", "pe": 4, "simd": 4}, "board": "icebreaker",
              "cycles_per_inference": 7787, "resources": {"lut4": {"used": 4111, "available": 5280},
                                                          "block_ram": {"used": 27}, "dsp": {"used": 7}},
              "estimate_vs_synthesis": {"lut4": {"estimate": 4677, "error": 0.14}},
              "fmax_mhz": {"median": 14.4, "min": 14.1}, "clock_met": True,
              "inferences_per_s": {"at_board_clock": 1541.2}}
    section = synth_section([report])
    assert section.startswith("## The whole accelerator (`make synth`)\n\nFrom the `report.json` files")
    assert section.endswith("| icebreaker | 3 | post | 4 x 4 | 4111 / 5280 | 27 | 7 | 14.4 / 14.1 | yes | 7787 | "
                            "1541 | 4677 (+14 %) |")
    assert synth_section([]) == ""
    text = render(_rows(), seeds=3, extra=section)
    assert "the clock is never what limits these MACs.\n\n## The whole accelerator" in text
    assert "| 4677 (+14 %) |\n\n## Reproduce, and run on a board" in text


def test_rewriting_the_page_keeps_the_sections_other_generators_own(tmp_path):
    from studies.asq_adapt import replace_block
    from studies.results import write_results

    page = tmp_path / "results.md"
    write_results(_rows(), tmp_path, seeds=3)
    assert "asq-comparison" not in page.read_text()
    body = "## ASQ against LSQ where inputs vary\n\n| data | bits |\n|---|---|\n| digits | 2 |"
    replace_block(page, "asq-comparison", body)
    with_block = page.read_text()
    block = "<!-- asq-comparison:begin -->\n" + body + "\n<!-- asq-comparison:end -->\n"
    assert with_block.endswith("in-process.\n\n" + block)

    rows = [r if r.design != "pot" else Row("pot", "icebreaker", 3, 2, 2, 300, 10, 0, 0, 30.0, 28.0, True, 93.0)
            for r in _rows()]
    write_results(rows, tmp_path, seeds=3)
    text = page.read_text()
    assert text == render(rows, seeds=3).rstrip() + "\n\n" + block  # page regenerated, block kept verbatim
    assert "| iCE40 UP5K | 3 | POT | 75.0 | 300 |" in text
    write_results(rows, tmp_path, seeds=3)
    assert page.read_text() == text  # stable: the block is neither lost nor doubled
