"""Property: a damaged bundle is refused on one line, or it computes exactly what the intact one does.

Hypothesis mutates a shipped bundle: any field of the manifest set to a value of any type or
deleted, a ``.mem`` line changed or the file truncated, a vector dropped, the manifest's layout
changed. Reading it must then either raise :class:`asqhw.errors.UserError` with a one-line message
(what ``asqhw`` prints as ``asqhw: error: ...`` with exit status 2) or, where the mutation is
harmless, give a bundle whose golden results are those of the intact bundle: never another
exception (a traceback on the command line) and never a silently different result.

Both formats: the shipped digits-b3 (format 2, a graph, computed by :func:`golden.graph.run_graph`)
and the same network as a format-1 chain (``tests/data/digits-b3-format1``, :func:`golden.model.run`).
"""

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asqhw.errors import UserError
from golden.bundle import MANIFEST, npz_bytes, parse_any_manifest, read_bundle, read_npz
from golden.graph import GraphBundle, pixels_to_input, run_graph
from golden.model import pixels_to_codes, run

BUNDLE = "digits-b3"
N_IMAGES = 24


def golden(bundle, pixels) -> dict:
    """The golden model's results of ``pixels``: :func:`run_graph` of a graph (every node), :func:`run`
    of a chain."""
    if isinstance(bundle, GraphBundle):
        return run_graph(bundle.graph, bundle.weights, pixels_to_input(bundle.manifest, pixels))
    return run(bundle, pixels_to_codes(bundle, pixels))


@pytest.fixture(scope="module", params=[2, 1], ids=["format2", "format1"])
def intact(request, shipped_bundle, format1_bundle):
    """The intact bundle's folder, manifest JSON, the images run and their golden results."""
    path = shipped_bundle(BUNDLE) if request.param == 2 else format1_bundle
    bundle = read_bundle(path)
    pixels = bundle.vectors["pixels"][:N_IMAGES]
    return path, json.loads((path / MANIFEST).read_text()), pixels, golden(bundle, pixels)


def weight_files(manifest: dict) -> list:
    """The ``.mem`` file names a manifest JSON object names (a chain's layers or a graph's nodes)."""
    items = manifest["graph"]["nodes"] if "graph" in manifest else manifest["layers"]
    return [item["weight"]["mem"] for item in items if "weight" in item]


def locations(obj, prefix=()):
    """Every place in a JSON tree, as key paths (the root left out)."""
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from locations(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from locations(value, (*prefix, i))


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["/etc/hostname", "../../../etc/passwd", ".", "conv1.weights.mem", "vectors.npz"]),
    st.lists(st.integers(-300, 300), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _get(obj, keys):
    for key in keys:
        obj = obj[key]
    return obj


@st.composite
def mutations(draw, manifest):
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "mem_line", "mem_truncate",
                                 "vectors_drop", "relayout"]))
    if kind in ("set", "delete"):
        where = draw(st.sampled_from(sorted(locations(manifest), key=repr)))
        return (kind, where, draw(JSON_VALUES) if kind == "set" else None)
    if kind in ("mem_line", "mem_truncate"):
        layer = draw(st.sampled_from(weight_files(manifest)))
        return (kind, layer, draw(st.integers(0, 200)), draw(st.sampled_from(["0", "7", "f", "zz", "", "00", "-1"])))
    if kind == "vectors_drop":
        return (kind, draw(st.sampled_from(["pixels", "pred", "logits", "labels", "conv2.in", "conv3.beta"])))
    return (kind, draw(st.sampled_from([None, 0, 4])))


def apply(folder: Path, manifest: dict, mutation) -> None:
    kind = mutation[0]
    if kind in ("set", "delete"):
        man = json.loads(json.dumps(manifest))
        where, value = mutation[1], mutation[2]
        parent = _get(man, where[:-1])
        if kind == "set":
            parent[where[-1]] = value
        else:
            del parent[where[-1]]
        (folder / MANIFEST).write_text(json.dumps(man, indent=1))
    elif kind in ("mem_line", "mem_truncate"):
        mem = folder / mutation[1]
        lines = mem.read_text().splitlines()
        at = mutation[2] % len(lines)
        if kind == "mem_line":
            lines[at] = mutation[3]
        else:
            lines = lines[:at]
        mem.write_text("".join(f"{ln}\n" for ln in lines))
    elif kind == "vectors_drop":
        vecs = read_npz(folder / "vectors.npz")
        vecs.pop(mutation[1])
        (folder / "vectors.npz").write_bytes(npz_bytes(vecs))
    else:  # the same JSON object, laid out differently: harmless
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=mutation[1]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_bundle_is_refused_on_one_line_or_computes_the_same(intact, data):
    path, manifest, pixels, expected = intact
    mutation = data.draw(mutations(manifest), label="mutation")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / BUNDLE
        shutil.copytree(path, folder)
        apply(folder, manifest, mutation)
        try:
            bundle = read_bundle(folder)
        except UserError as err:
            assert "\n" not in str(err) and str(err).strip(), repr(str(err))
            return
        # accepted: only a harmless mutation may be, and then nothing it computes differs
        result = golden(bundle, pixels)
        for key, value in expected.items():
            assert np.array_equal(result[key], value), (mutation, key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checks_by_meaning_leave_no_value_that_crashes_the_golden_model(intact, data):
    """Without the manifest's checksum (a hand-edited manifest, re-hashed): a value the checks
    accept never makes the golden model fail; the field's range is checked, not assumed."""
    path, manifest, pixels, _ = intact
    where = data.draw(st.sampled_from(sorted(locations(manifest), key=repr)), label="field")
    man = json.loads(json.dumps(manifest))
    _get(man, where[:-1])[where[-1]] = data.draw(JSON_VALUES, label="value")
    try:
        parsed = parse_any_manifest(man)
    except UserError as err:
        assert "\n" not in str(err) and str(err).strip(), repr(str(err))
        return
    intact_bundle = read_bundle(path)
    weights = {new: intact_bundle.weights[old]  # a renamed layer or node keeps its weights
               for (new, _), (old, _) in zip(parsed.weight_specs(), intact_bundle.manifest.weight_specs(),
                                             strict=True)}
    bundle = dataclasses.replace(intact_bundle, manifest=parsed, weights=weights)
    with np.errstate(all="raise"):
        golden(bundle, pixels)


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def intact_checkpoint(shipped_checkpoint):
    """The shipped checkpoint's payload, and its intact model's logits on a few random images."""
    import torch

    from quant.checkpoint import load_checkpoint

    path = shipped_checkpoint(BUNDLE)
    model, _ = load_checkpoint(path)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    return torch.load(path, map_location="cpu", weights_only=True), x, logits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_checkpoint_is_refused_on_one_line_or_computes_the_same(intact_checkpoint, data):
    import copy

    import torch

    from quant.checkpoint import load_checkpoint

    payload, x, expected = intact_checkpoint
    payload = copy.copy(payload)
    payload["state_dict"] = dict(payload["state_dict"])
    if data.draw(st.booleans(), label="in the state"):
        key = data.draw(st.sampled_from(sorted(payload["state_dict"])), label="tensor")
        tensor = payload["state_dict"][key].clone()
        change = data.draw(st.sampled_from(["nan", "inf", "shape", "drop"]), label="change")
        if change == "drop":
            del payload["state_dict"][key]
        elif change == "shape":
            payload["state_dict"][key] = torch.zeros(tensor.numel() + 1)
        elif tensor.is_floating_point() and tensor.numel():
            tensor.view(-1)[0] = float(change)
            payload["state_dict"][key] = tensor
    else:
        key = data.draw(st.sampled_from(sorted(k for k in payload if k not in ("state_dict", "rng",
                                                                              "optimizer"))), label="key")
        payload[key] = data.draw(JSON_VALUES, label="value")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated.pt"
        torch.save(payload, path)
        try:
            model, _ = load_checkpoint(path)
        except UserError as err:
            assert "\n" not in str(err) and str(err).strip(), repr(str(err))
            return
    with torch.no_grad():
        assert torch.equal(model(x), expected)
