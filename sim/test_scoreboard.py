"""The testbench plumbing without a simulator: payload packing and the in-order checker.

Packing is checked against Amaranth's own layout flattening (``lib.data`` views converted with
``Const``), so a packing bug cannot hide behind a symmetric pack/unpack pair.
"""

import pytest
from amaranth.hdl import Const, signed, unsigned
from amaranth.lib import data
from hypothesis import given
from hypothesis import strategies as st

from sim.scoreboard import InOrderChecker, Mismatch
from sim.tb import pack_array, pack_fields, to_signed, unpack_array, unpack_fields


@st.composite
def fields(draw):
    n = draw(st.integers(1, 5))
    out = []
    for _ in range(n):
        width = draw(st.integers(1, 20))
        is_signed = draw(st.booleans())
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
        out.append((draw(st.integers(lo, hi)), width, is_signed))
    return out


@given(fields())
def test_pack_fields_matches_amaranth_struct_layout(fs):
    layout = data.StructLayout({f"f{i}": (signed(w) if s else unsigned(w)) for i, (_, w, s) in enumerate(fs)})
    expected = Const.cast(layout.const({f"f{i}": v for i, (v, _, _) in enumerate(fs)})).value
    assert pack_fields(fs) == expected
    assert unpack_fields(expected, [(w, s) for _, w, s in fs]) == [v for v, _, _ in fs]


@given(st.integers(1, 9).flatmap(lambda w: st.tuples(st.just(w), st.lists(
    st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1), min_size=1, max_size=8))))
def test_pack_array_matches_amaranth_array_layout(case):
    width, values = case
    layout = data.ArrayLayout(signed(width), len(values))
    expected = Const.cast(layout.const(values)).value
    assert pack_array(values, width, signed=True) == expected
    assert unpack_array(expected, width, len(values), signed=True) == values


def test_pack_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="field 1=8 does not fit signed 4 bits"):
        pack_fields([(0, 3, False), (8, 4, True)])
    with pytest.raises(ValueError, match="field 0=-1 does not fit unsigned 3 bits"):
        pack_array([-1], 3)


def test_to_signed_hand_values():
    assert [to_signed(v, 4) for v in (0, 7, 8, 15)] == [0, 7, -8, -1]


def test_checker_reports_image_layer_index_expected_got_in_order():
    checker = InOrderChecker("net", max_report=2)
    checker.expect(3, "conv2.in", [1, 2, 3])
    checker.expect(4, "fc.out", [5, 6])
    assert checker.observe([1, 9, 3]) == [Mismatch(3, "conv2.in", 1, 2, 9)]
    assert checker.observe([5, 6]) == []
    assert not checker.ok
    report = checker.report()
    assert "2 transactions (5 values) compared, 1 mismatches, 0 missing, 0 extra" in report
    assert "image 3 layer conv2.in index 1: expected 2 got 9" in report
    with pytest.raises(AssertionError, match="image 3 layer conv2.in index 1: expected 2 got 9"):
        checker.finish()


def test_checker_fails_on_missing_and_extra_transactions():
    missing = InOrderChecker("m")
    missing.expect(0, "fc.out", [1])
    with pytest.raises(AssertionError, match="1 missing"):
        missing.finish()
    extra = InOrderChecker("e")
    extra.observe([1])
    with pytest.raises(AssertionError, match="1 extra"):
        extra.finish()
    short = InOrderChecker("s")
    short.expect(0, "fc.out", [1, 2])
    assert short.observe([1]) == [Mismatch(0, "fc.out", 1, 2, 1)]  # lengths 2 vs 1


def test_checker_passes_when_everything_matches():
    checker = InOrderChecker("ok")
    for i in range(3):
        checker.expect(i, "fc.out", [i, -i])
    for i in range(3):
        checker.observe([i, -i])
    checker.finish()
    assert checker.ok and checker.matched == 3 and checker.elements == 6
