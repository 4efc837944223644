"""The default bundles shipped under models/: golden vs float, worst cases, reproducibility.

The digits bundles are format 2 (graphs); the chain-level checks below run on their chain view
(:func:`golden.model.load_bundle`, :func:`golden.graph.chain_bundle`), what the chain accelerator reads.
"""

from pathlib import Path

import numpy as np
import pytest

from golden import arith, formats
from golden.bundle import read_bundle, write_bundle
from golden.model import accumulate, load_bundle, pixels_to_codes, run
from quant.export.fidelity import golden_report

ROOT = Path(__file__).resolve().parents[1]  # where `import golden` finds the repository's package
# Shipped bundle -> (network, scheme, BITS, pixel_max).
SHIPPED = {"digits-b2": ("digits", "asq", 2, 16), "digits-b3": ("digits", "asq+post", 3, 16),
           "digits-b4": ("digits", "asq+post", 4, 16), "digits-b8": ("digits", "asq", 8, 16),
           "digits-vary-b3": ("digits-vary", "asq+post", 3, 255)}


@pytest.fixture(scope="module", params=sorted(SHIPPED), ids=sorted(SHIPPED))
def shipped(request, shipped_bundle):
    name = request.param
    return name, load_bundle(shipped_bundle(name))


@pytest.fixture(scope="module")
def report(shipped, shipped_bundle, shipped_checkpoint):
    name, _ = shipped
    return golden_report(shipped_bundle(name), shipped_checkpoint(name))


def test_shipped_bundle_is_the_documented_model(shipped, shipped_bundle):
    name, bundle = shipped
    man = bundle.manifest
    network, scheme, bits, pixel_max = SHIPPED[name]
    assert (man.model, man.scheme, man.bits, man.input.pixel_max) == (network, scheme, bits, pixel_max)
    # `make export` (no --post-frac-bits) reproduces it: the default F, or for POST weights the
    # smallest F from the default up whose bound E stays below one code (docs/arithmetic.md 2.2)
    search = man.accuracy.get("post_frac_bits_search")
    if search is None:
        assert man.post_frac_bits == formats.default_post_frac_bits(bits)
    else:
        tried = {int(f): e for f, e in search["E"].items()}
        assert min(tried) == formats.default_post_frac_bits(bits) and max(tried) == man.post_frac_bits
        assert tried[man.post_frac_bits] < 1.0
        assert all(e >= 1.0 for f, e in tried.items() if f < man.post_frac_bits)
    # lossless input coding: every pixel value its own conv1 code
    assert len(set(man.input.lut)) == pixel_max + 1
    assert sum(p.stat().st_size for p in shipped_bundle(name).iterdir()) < 1_000_000
    for layer in man.layers[1:3]:
        assert layer.act_in.bits == bits and layer.weight.bits == bits
        asq = layer.act_in.asq
        # the beta saturation (docs section 4) never bites on the training split
        lo, hi = asq.beta_seen
        assert asq.beta_min * 2.0 ** -asq.G < lo <= hi < asq.beta_max * 2.0 ** -asq.G


def test_golden_agrees_with_float_on_the_test_split(report):
    assert report["vectors_match"]
    assert report["flips"] <= 2, report["flips"]
    assert report["golden_top1"] >= 90.0


def test_every_stage_within_the_documented_bound(report):
    ops = [row["op"] for row in report["teacher_forced"]]
    assert ops.count("asq") == 2 and len(ops) == 6  # conv1, conv2, conv3, fc and the two ASQ units
    for row in report["teacher_forced"]:
        if row["op"] == "asq":
            assert row["beta_within_bound"] and row["asq_within_bound"], row
            assert row["asq_bound_max"] < 1.0 and row["asq_max_code_diff"] <= 1
            continue
        assert row["requant_within_bound"], row
        if row["requant_output"] == "codes":
            assert row["requant_max_bound"] < 1.0  # so a code moves by at most one
            assert row["requant_max_diff"] <= 1


def test_shipped_bundle_is_a_chain_shaped_graph_with_every_images_vectors(shipped, shipped_bundle):
    """Format 2, chain-shaped (so it runs on the chain accelerator, not the engine), with every
    node's golden values for all 360 test images: those the chain accelerator's simulation checks."""
    from golden.graph import GraphBundle, is_chain, run_graph
    from hw.eda.generate import is_graph_bundle, uses_engine

    name, view = shipped
    graph_bundle = read_bundle(shipped_bundle(name))
    assert isinstance(graph_bundle, GraphBundle) and graph_bundle.manifest.format_version == 2
    assert is_chain(graph_bundle.graph) and is_graph_bundle(shipped_bundle(name))
    assert not uses_engine(shipped_bundle(name)) and not uses_engine(graph_bundle)
    vec = graph_bundle.vectors
    result = run_graph(graph_bundle.graph, graph_bundle.weights, np.asarray(view.manifest.input.lut)[vec["pixels"]])
    for node in graph_bundle.graph.nodes:
        if node.name in vec:
            assert len(vec[node.name]) == 360 and np.array_equal(vec[node.name], result[node.name]), node.name
    assert {f"{layer.name}.in" for layer in view.layers} <= set(view.vectors)
    assert all(len(v) == 360 for v in view.vectors.values())


def test_vectors_are_golden_of_the_pixels(shipped):
    _, bundle = shipped
    vec = bundle.vectors
    result = run(bundle, pixels_to_codes(bundle, vec["pixels"]))
    for key, stored in vec.items():
        if key in result:
            assert np.array_equal(result[key], stored), key
    assert float((result["pred"] == vec["labels"]).mean()) == bundle.manifest.accuracy["golden"]


def test_shipped_bundle_round_trips_byte_for_byte(shipped, shipped_bundle, tmp_path):
    name, _ = shipped
    write_bundle(read_bundle(shipped_bundle(name)), tmp_path / "copy")
    for path in shipped_bundle(name).iterdir():
        assert (tmp_path / "copy" / path.name).read_bytes() == path.read_bytes(), path.name


def _fits(values, width: int, signed: bool = True) -> bool:
    values = np.asarray(values)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    return bool(values.min() >= lo and values.max() <= hi)


def _extreme_weight(layer, want_max: bool, frac_bits: int) -> int:
    """The weight code whose product with the extreme activation is pmax (or pmin)."""
    w = layer.weight
    act = layer.act_in
    lo, hi = (-(1 << (act.bits - 1)), (1 << (act.bits - 1)) - 1) if act.signed else (0, (1 << act.bits) - 1)
    codes = range(-(1 << (w.bits - 1)), 1 << (w.bits - 1)) if w.kind == "int" else range(1 << w.bits)
    target = layer.product_range[1 if want_max else 0]
    for a in (lo, hi):
        for c in codes:
            if arith.product(a, c, w.kind, w.bits, frac_bits) == target:
                return a, c
    raise AssertionError("no code pair reaches the product range")


@pytest.mark.parametrize("want_max", [True, False])
def test_worst_case_accumulators_fit_exactly(shipped, want_max):
    """Every code at its extreme: the interior accumulators reach n * pmax (n * pmin) and fit."""
    _, bundle = shipped
    for layer in bundle.layers:
        a, c = _extreme_weight(layer, want_max, bundle.manifest.post_frac_bits)
        acts = np.full((1,) + tuple(layer.in_shape), a, dtype=np.int64)
        weights = np.full(layer.weight.shape, c, dtype=np.int64)
        acc = accumulate(acts, layer, weights, bundle.manifest.post_frac_bits)
        extreme = layer.fan_in * layer.product_range[1 if want_max else 0]
        assert (acc.max() if want_max else acc.min()) == extreme, layer.name
        assert _fits(acc, layer.acc_width), layer.name
        # the width is also needed: one bit fewer cannot hold both ends of the range
        ends = [layer.fan_in * p for p in layer.product_range]
        assert not _fits(ends, layer.acc_width - 1), layer.name


def test_extreme_images_stay_within_every_width(shipped):
    """Real weights, extreme and random pixels: accumulators, t, outputs, ASQ internals fit."""
    _, bundle = shipped
    rng = np.random.default_rng(0)
    top = bundle.manifest.input.pixel_max
    pixels = np.concatenate([
        np.zeros((1, 1, 8, 8), int), np.full((1, 1, 8, 8), top),
        (np.indices((8, 8)).sum(axis=0) % 2 * top).reshape(1, 1, 8, 8),
        rng.integers(0, top + 1, size=(64, 1, 8, 8)),
    ])
    result = run(bundle, pixels_to_codes(bundle, pixels))
    for i, layer in enumerate(bundle.layers):
        name, req = layer.name, layer.requant
        acc = result[f"{name}.acc"]
        assert _fits(acc, layer.acc_width), name
        beta = result.get(f"{name}.beta")
        g = 1 if beta is None else beta.reshape((-1,) + (1,) * (acc.ndim - 1))
        chan = (-1,) + (1,) * (acc.ndim - 2)
        t = acc * np.asarray(req.M).reshape(chan) * g + (np.asarray(req.B).reshape(chan) << req.G)
        assert _fits(t, req.t_width), name
        out = result["logits"] if req.output == "logits" else (
            result[f"{name}.y"] if req.output == "y" else result[f"{bundle.layers[i + 1].name}.in"])
        assert _fits(out, req.out_width, signed=req.output == "logits"), name


def test_asq_unit_widths_hold_at_full_scale(shipped):
    """y = Y_MAX everywhere (and 0 everywhere): every ASQ intermediate fits its recorded width."""
    _, bundle = shipped
    for layer in bundle.layers:
        p = layer.act_in.asq_constants()
        if p is None:
            continue
        widths = layer.act_in.asq.widths
        for fill in (0, (1 << widths.y) - 1):
            y = np.full((1,) + tuple(layer.in_shape), fill, dtype=np.int64)
            z = y.reshape(1, y.shape[1], -1).sum(axis=2)
            assert _fits(z, widths.z, signed=False)
            if p.W1 is not None:
                s1 = z @ p.W1.T + p.b1
                assert _fits(s1, widths.sum1)
                h = np.maximum(0, arith.rshift_round(s1, p.S1))
                assert _fits(h, widths.h, signed=False)
            else:
                h = z
            assert _fits(h @ p.W2 + p.b2, widths.sum2)
            codes, beta = arith.asq_unit(y, p)
            assert _fits(beta, widths.beta, signed=False)
            assert _fits(p.s_code * beta, widths.q, signed=False)
            r = arith.reciprocal(p.s_code * beta, p.R)
            assert _fits(r, widths.r, signed=False) and _fits(y * r, widths.yr, signed=False)
        # the largest reciprocal (beta at its floor) fits too
        assert _fits(arith.reciprocal(p.s_code * p.beta_min, p.R), widths.r, signed=False)


@pytest.mark.parametrize("bits", [3, 4, "digits-vary-b3"])
@pytest.mark.parametrize("name", ["conv2", "conv3"])
def test_actual_table_error_is_within_its_a_priori_bound(bits, name, shipped_bundle):
    """The teacher-forced bound E takes |acc - acc*| as measured (docs/arithmetic.md section 6): it
    must never exceed the worst case of section 2.2, and on real data it is smaller (cancellation)."""
    from quant.export.fidelity import exact_accumulator

    bundle = load_bundle(shipped_bundle(bits))
    layer, weights, frac = bundle.layer(name), bundle.weights[name], bundle.manifest.post_frac_bits
    codes = bundle.vectors[f"{name}.in"][:60].astype(np.int64)
    acc = accumulate(codes, layer, weights, frac)
    acc_exact, a_priori = exact_accumulator(codes, layer, weights, frac)
    actual = np.abs(acc - acc_exact)
    assert np.all(actual <= a_priori + 1e-9)
    assert actual.max() > 0 and actual.max() < a_priori.max()


def test_importing_golden_does_not_import_torch():
    """golden is the numpy-only specification: none of its modules pulls in the training side."""
    import subprocess
    import sys

    code = ("import golden, golden.model, golden.bundle, golden.formats, golden.arith, sys; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_reexport_of_the_shipped_checkpoint_is_the_shipped_bundle(name, tmp_path, shipped_bundle, shipped_checkpoint):
    """`make export BITS=B [DATA=...]` from the shipped checkpoint gives the shipped (format-2) bundle,
    byte for byte, every time: two exports, the same SHA-256 of every file as the shipped one's."""
    import hashlib

    from quant.export.build import export_checkpoint

    def hashes(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    shipped = hashes(shipped_bundle(name))
    for again in (tmp_path / "again", tmp_path / "twice"):
        export_checkpoint(shipped_checkpoint(name), again, progress=False)
        assert hashes(again) == shipped
