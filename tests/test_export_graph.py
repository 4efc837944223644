"""The graph exporter (quant.export.graph) and format-2 bundles (golden.graph, golden.bundle).

The strongest check: a digits checkpoint exported as a graph computes, in ``golden.graph.run_graph``,
the same integers as ``golden.model.run`` on its chain (every layer's input codes, accumulators and
logits), with the same constants, and its chain view equals the format-1 bundle once shipped.
ResNet-20 and MobileNet-V2 are exported from random-init, briefly calibrated models (their shapes and
both shortcut kinds are what matters), and every requantizer of the ResNet-20 graph is checked
teacher forced against its bound.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asqhw.errors import UserError
from golden.bundle import read_bundle, write_bundle
from golden.graph import GraphBundle, run_graph
from golden.model import load_bundle, pixels_to_codes, run
from quant.checkpoint import load_checkpoint
from quant.export.build import build_graph_bundle, export_graph_model
from quant.export.fidelity import graph_teacher_forced
from quant.export.graph import export_graph
from quant.export.networks import DIGITS, network_for
from quant.models import build_model
from quant.quantize import calibrate, quantize_model

ROOT = Path(__file__).resolve().parents[1]


def _within_bounds(rows) -> bool:
    return all(all(v for k, v in row.items() if k.endswith("within_bound")) for row in rows)


# ----------------------------------------------------------------------------- digits: graph == chain


@pytest.mark.parametrize("name", ["digits-b3", "digits-vary-b3"])
def test_digits_graph_computes_the_format_1_integers(name):
    model, meta = load_checkpoint(ROOT / "models" / "checkpoints" / f"{name}.pt")
    net = network_for(meta)
    x_train, _, x_test, _ = net.split()
    bundle = load_bundle(ROOT / "models" / name)
    ex = export_graph(model, x_train, post_frac_bits=bundle.manifest.post_frac_bits)
    assert [n.op for n in ex.graph.nodes] == ["input", "conv", "conv", "conv", "flatten", "fc"]
    codes = pixels_to_codes(bundle, net.pixels(x_test))
    chain = run(bundle, codes)
    graph = run_graph(ex.graph, ex.weights, codes)
    for layer in bundle.layers:
        node = ex.graph.node(layer.name)
        assert node.act_in == layer.act_in and node.weight == layer.weight
        assert (node.requant.M, node.requant.B, node.requant.S, node.requant.lo, node.requant.hi) == (
            layer.requant.M, layer.requant.B, layer.requant.S, layer.requant.lo, layer.requant.hi)
        np.testing.assert_array_equal(ex.weights[layer.name], bundle.weights[layer.name])
        np.testing.assert_array_equal(graph[f"{layer.name}.in"].reshape(chain[f"{layer.name}.in"].shape),
                                      chain[f"{layer.name}.in"])
        np.testing.assert_array_equal(graph[f"{layer.name}.acc"], chain[f"{layer.name}.acc"])
    np.testing.assert_array_equal(graph[ex.graph.output], chain["logits"])


# ----------------------------------------------------------------------------- ResNet-20, MobileNet-V2


def _calibrated(name: str, scheme: str, bits: int, size: int = 32, n: int = 8, input_step=None):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10)
    if input_step is not None:
        model.input_step = input_step
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 17, (n, 3, size, size), generator=gen).float() / 16
    model.train()
    with torch.no_grad():
        model(x)  # BN running statistics of these images
    quantize_model(model, scheme, bits)
    calibrate(model, x)
    return model.eval(), x


def test_resnet20_graph_has_both_shortcuts_and_every_bound_holds():
    model, x = _calibrated("resnet20", "asq+post", 3, n=6)
    ex = export_graph(model, x)
    g = ex.graph
    ops = [n.op for n in g.nodes]
    assert ops.count("conv") == 21 and ops.count("fc") == 1 and ops.count("add") == 9
    assert ops.count("gap") == 1 and ops.count("flatten") == 1
    adds = [n for n in g.nodes if n.op == "add"]
    # 1x1 shortcut: both branches raw accumulators (conv2 and the downsample conv, BN folded into M and A)
    projected = [a for a in adds if all(g.info(i).kind == "acc" for i in a.inputs)]
    assert sorted(g.node(a.inputs[1]).name for a in projected) == ["layer2_0_downsample_0", "layer3_0_downsample_0"]
    assert all(g.node(a.inputs[1]).kernel == 1 and g.node(a.inputs[1]).stride == 2 for a in projected)
    # identity: the block input as y, the main branch conv2's accumulator carrying its ASQ beta
    identity = [a for a in adds if a not in projected]
    assert len(identity) == 7 and all(g.info(a.inputs[1]).kind == "y" for a in identity)
    assert all(a.requant.G == 10 and a.requant.lo == 0 for a in adds)
    result = run_graph(g, ex.weights, model.conv1.act_quant.codes(x[:2]).numpy())
    assert result[g.output].shape == (2, 10)
    assert _within_bounds(graph_teacher_forced(ex, model, x[:3]))


def test_resnet18_max_pool_is_applied_to_codes_and_to_the_skip_y():
    model, x = _calibrated("resnet18", "lsq+pot", 4, size=64, n=4)
    ex = export_graph(model, x)
    g = ex.graph
    pools = [n for n in g.nodes if n.op == "maxpool"]
    assert sorted(g.info(p.name).kind for p in pools) == ["codes", "y"]  # layer1.0.conv1's codes, its skip's y
    assert all(g.info(p.name).shape == (64, 16, 16) for p in pools)
    assert _within_bounds(graph_teacher_forced(ex, model, x[:2]))


@pytest.mark.parametrize("scheme", ["lsq", "asq+post"])
def test_mobilenet_v2_exports_as_a_graph(scheme):
    model, x = _calibrated("mobilenet_v2", scheme, 4, n=4)
    ex = export_graph(model, x)
    g = ex.graph
    assert sum(n.op == "conv" and n.groups > 1 and n.groups == n.weight.shape[0] for n in g.nodes) == 17
    assert sum(n.op == "add" for n in g.nodes) == 10
    gap = next(n for n in g.nodes if n.op == "gap")
    assert gap.requant is not None and gap.requant.output == "codes"  # 1/(H W) folded into its multiplier
    result = run_graph(g, ex.weights, model.features[0][0].act_quant.codes(x[:1]).numpy())
    assert result[g.output].shape == (1, 10)
    if scheme == "asq+post":
        # the paper's configuration: linear-bottleneck (signed) codes meet POST weights in the 16
        # expansion convs after the first block and in features.18; ASQ adapts the post-ReLU6 inputs
        convs = [n for n in g.nodes if n.op == "conv" and n.weight.kind == "post"]
        signed = [n.name for n in convs if n.act_in.signed]
        assert len(signed) == 17 and "features_2_conv_0_0" in signed
        assert sum(n.act_in.asq is not None for n in convs) == len(convs) - len(signed)
        assert _within_bounds(graph_teacher_forced(ex, model, x[:2]))


class _Small(nn.Module):
    """conv-BN-ReLU6, max pool, conv-BN, average pool, fc: the folds and pools on a small map."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 2 * 2, 10)

    def forward(self, x):
        h = self.pool(nn.functional.relu6(self.bn1(self.conv1(x))))
        return self.fc(self.avg(torch.relu(self.bn2(self.conv2(h)))).flatten(1))


def test_relu6_is_folded_and_pools_follow_the_quantization():
    torch.manual_seed(0)
    model = quantize_model(_Small(), "lsq", 4)
    x = torch.rand(8, 1, 8, 8)
    calibrate(model, x)
    model.eval().conv2.act_quant.step.data.fill_(1.0)  # q(6) = 6 < 15: the ReLU6 shows in hi
    ex = export_graph(model, x)
    g = ex.graph
    assert [n.op for n in g.nodes] == ["input", "conv", "maxpool", "conv", "avgpool", "flatten", "fc"]
    assert (g.node("conv1").requant.lo, g.node("conv1").requant.hi) == (0, 6)
    assert g.node("conv2").requant.output == "y" and g.node("conv2").requant.lo == 0
    assert g.node("avg").requant.output == "codes" and g.info("avg").sum_width is not None
    assert _within_bounds(graph_teacher_forced(ex, model, x))


# ----------------------------------------------------------------------------- refusals


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.sigmoid(self.conv2(self.conv1(x))), 1))


class _Cat(_Sigmoid):
    def forward(self, x):
        h = self.conv1(x)
        return self.fc(torch.flatten(torch.cat([self.conv2(h), h], dim=1)[:, :4], 1))


@pytest.mark.parametrize("cls, op, node", [(_Sigmoid, "sigmoid", "sigmoid"), (_Cat, "cat", "cat")])
def test_an_unsupported_op_is_refused_with_its_name_and_node(cls, op, node):
    torch.manual_seed(0)
    model = quantize_model(cls(), "lsq", 4)
    x = torch.rand(4, 1, 8, 8)
    calibrate(model, x)
    expected = rf"fx node '{node}' \(call_function {op}\): op torch\.{op} is not supported"
    with pytest.raises(UserError, match=expected) as err:
        export_graph(model.eval(), x)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- format-2 bundles


CHECKPOINT = ROOT / "models" / "checkpoints" / "digits-b3.pt"


@pytest.fixture(scope="module")
def digits_graph(tmp_path_factory):
    """The digits-b3 checkpoint exported as a format-2 bundle (``asqhw export``)."""
    from asqhw.cli import main

    model, meta = load_checkpoint(CHECKPOINT)
    out = tmp_path_factory.mktemp("graph") / "digits-b3-graph"
    assert main(["export", str(CHECKPOINT), str(out), "--quiet"]) == 0
    bundle = read_bundle(out)
    return replace(bundle, manifest=replace(bundle.manifest, files=None, sha256=None)), out, model, meta


def test_graph_bundle_reads_back_and_agrees_with_the_float_model(digits_graph):
    bundle, out, _, _ = digits_graph
    man = json.loads((out / "manifest.json").read_text())
    assert man["format_version"] == 2 and "graph" in man and "layers" not in man
    read = read_bundle(out)
    assert isinstance(read, GraphBundle) and replace(read.manifest, files=None, sha256=None) == bundle.manifest
    acc = read.manifest.accuracy
    assert acc["n_test"] == 360 and acc["flips"] <= 0.01 * 360 and _within_bounds(acc["teacher_forced"])
    # a chain-shaped graph keeps every node's values for the whole split (its RTL checks all of them)
    assert len(read.vectors["pred"]) == 360 and read.vectors["conv2"].shape == (360, 16, 4, 4)
    with pytest.raises(UserError, match="format-2 .* no layer chain"):
        read.layers  # noqa: B018 - a chain reader given a graph gets one line, not an AttributeError


def test_a_chain_shaped_graph_bundle_gives_the_format_1_layers(digits_graph, format1_bundle):
    """Its chain view equals the format-1 bundle of the same checkpoint once shipped: layers, input,
    weights, and every vector the chain accelerator's simulation checks."""
    from golden.graph import chain_bundle

    bundle, out, _, _ = digits_graph
    chain = chain_bundle(read_bundle(out))
    old = read_bundle(format1_bundle)
    assert old.manifest.format_version == 1
    assert chain.layers == old.layers and chain.manifest.input == old.manifest.input
    for layer in old.layers:
        np.testing.assert_array_equal(chain.weights[layer.name], old.weights[layer.name])
    assert sorted(chain.vectors) == sorted(old.vectors)
    for key, value in old.vectors.items():
        np.testing.assert_array_equal(chain.vectors[key], value)
        assert chain.vectors[key].dtype == value.dtype, key
    assert load_bundle(out).layers == old.layers  # what every chain reader gets


def test_graph_export_is_byte_for_byte_reproducible(digits_graph, tmp_path):
    _, out, model, meta = digits_graph
    again = tmp_path / "again"
    export_graph_model(model, dict(meta), network_for(meta), again, progress=False)
    rewritten = tmp_path / "rewritten"
    write_bundle(read_bundle(out), rewritten)
    for other in (again, rewritten):
        assert sorted(p.name for p in other.iterdir()) == sorted(p.name for p in out.iterdir())
        for file in out.iterdir():
            assert (other / file.name).read_bytes() == file.read_bytes(), file.name


def test_eval_golden_reads_a_graph_bundle(digits_graph, capsys):
    from asqhw.cli import main

    _, out, _, _ = digits_graph
    assert main(["eval", "--golden", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format_version"] == 2 and report["vectors_match"] and report["flips"] <= 0.01 * report["n_test"]
    assert report["golden_top1"] > 95 and _within_bounds(report["teacher_forced"])
    assert main(["eval", str(CHECKPOINT), "--golden", str(out), "--json"]) == 0  # measured again from the checkpoint
    again = json.loads(capsys.readouterr().out)
    assert again["float_source"] == "checkpoint" and again["teacher_forced"] == report["teacher_forced"]
    assert again["nodes"] == report["nodes"] and again["flips"] == report["flips"]


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    edit(man)
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def _set(path, value):
    def edit(man):
        obj = man
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set(["graph", "nodes", 2, "requant", "M", 0], 1), r"file manifest\.json changed since export"),
    (_set(["graph", "nodes", 2, "stride"], 3),
     r"node 'conv3'\.act_in\.asq: hw 16 disagrees with the input 'conv2' \(9\)"),
    (_set(["graph", "nodes", 1, "ceil_mode"], True), r"node 'conv1': field 'ceil_mode' unknown here"),
    (_set(["graph", "output"], "conv3"), r"graph: node 'fc': its output is never used"),
    (_set(["graph", "nodes", 1, "weight", "mem"], "../conv1.weights.mem"), r"not a plain file name"),
    (_set(["graph", "nodes", 0, "bits"], 7), r"graph input node 'input' .* disagrees with field 'input'"),
    (_set(["graph", "nodes", 2, "act_in", "asq", "R"], 3), r"field 'R' is 3, expected"),
])
def test_a_corrupt_graph_manifest_is_refused_in_one_line(digits_graph, tmp_path, edit, message):
    _, out, _, _ = digits_graph
    bad = _edited(out, tmp_path / "bad", edit)
    with pytest.raises(UserError, match=message) as err:
        read_bundle(bad)
    assert "\n" not in str(err.value)


def test_a_changed_weight_or_vector_file_is_refused(digits_graph, tmp_path):
    _, out, _, _ = digits_graph
    bad = tmp_path / "mem"
    shutil.copytree(out, bad)
    mem = bad / "conv3.weights.mem"
    words = mem.read_text().splitlines()
    words[0] = "7" if words[0] != "7" else "6"
    mem.write_text("\n".join(words) + "\n")
    with pytest.raises(UserError, match=r"conv3\.weights\.mem: file conv3\.weights\.mem changed since export"):
        read_bundle(bad)
    bad = tmp_path / "vec"
    shutil.copytree(out, bad)
    (bad / "vectors.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"vectors\.npz: not a readable \.npz"):
        read_bundle(bad)


def test_graph_vectors_with_a_missing_node_are_refused(digits_graph, tmp_path):
    bundle, _, _, _ = digits_graph
    vectors = dict(bundle.vectors)
    del vectors["conv1"]
    out = tmp_path / "b"
    write_bundle(replace(bundle, vectors=vectors), out)
    with pytest.raises(UserError, match=r"vectors\.npz: keys differ from the graph's \(first difference: 'conv1'\)"):
        read_bundle(out)


@pytest.mark.slow
def test_resnet20_graph_bundle_round_trip(tmp_path):
    """A whole ResNet-20 format-2 bundle (tiny random data with a lossless pixel coding): written,
    read back, every teacher-forced bound holds, golden reproduces its vectors."""
    model, x = _calibrated("resnet20", "asq+post", 3, n=12, input_step=1 / 16)
    labels = torch.arange(12) % 10
    net = replace(DIGITS, name="resnet20", model="resnet20", data="random", bn_of={}, in_shapes={}, out_shapes={},
                  input_shape=[3, 32, 32], split=lambda: (x[:8], labels[:8], x[8:], labels[8:]),
                  split_name="random pixels (test only)")
    bundle = build_graph_bundle(model, {"scheme": "asq+post", "bits": 3}, net, progress=False)
    write_bundle(bundle, tmp_path / "r20")
    read = read_bundle(tmp_path / "r20")
    assert replace(read.manifest, files=None, sha256=None) == bundle.manifest
    assert _within_bounds(read.manifest.accuracy["teacher_forced"])
    codes = np.asarray(read.manifest.input.lut)[read.vectors["pixels"]]
    result = run_graph(read.graph, read.weights, codes)
    np.testing.assert_array_equal(result[read.graph.output], read.vectors["logits"])


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list) and obj:
        for i, value in enumerate(obj):
            yield from _leaves(value, (*path, i))
    else:
        yield path


def test_any_mutated_graph_manifest_is_refused_in_one_line_or_reads(digits_graph):
    """Every field of a format-2 manifest replaced by a value of another type or range: a one-line
    UserError, or (a value that still makes sense) a manifest that parses; never another exception."""
    from golden.bundle import parse_any_manifest

    _, out, _, _ = digits_graph
    man = json.loads((out / "manifest.json").read_text())
    paths = [p for p in _leaves(man) if p and p[0] != "accuracy"]
    rng = np.random.default_rng(0)
    replacements = [None, "x", -1, 0, 2**70, 1.5, True, [], {}]
    for index in rng.choice(len(paths), size=200, replace=False):
        path = paths[index]
        bad = json.loads(json.dumps(man))
        obj = bad
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = replacements[rng.integers(len(replacements))]
        try:
            parse_any_manifest(bad, "manifest.json")
        except UserError as err:
            assert "\n" not in str(err), (path, str(err))


# ----------------------------------------------------------------------------- shipped ResNet-20 bundles

SHIPPED_R20 = {bits: ROOT / "models" / f"resnet20-digits32-b{bits}" for bits in (3, 4)}


@pytest.mark.parametrize("bits", sorted(SHIPPED_R20))
def test_shipped_resnet20_bundles_reproduce_their_vectors(bits):
    """The shipped ResNet-20 graph bundles (digits32, NOT CIFAR-10): at most 1 % flips, every
    teacher-forced bound held at export, and golden gives every stored node vector again."""
    from golden.graph import pixels_to_input, predictions

    bundle = read_bundle(SHIPPED_R20[bits])
    man = bundle.manifest
    assert (man.format_version, man.model, man.scheme, man.bits) == (2, "resnet20-digits32", "asq+post", bits)
    acc = man.accuracy
    assert acc["n_test"] == 360 and acc["flips"] <= 0.01 * acc["n_test"] and _within_bounds(acc["teacher_forced"])
    k = len(bundle.vectors["input"])
    assert k == 8 and sum(n.op == "add" for n in man.graph.nodes) == 9
    result = run_graph(man.graph, bundle.weights, pixels_to_input(man, bundle.vectors["pixels"][:k]))
    for key, stored in bundle.vectors.items():
        if key in result:
            np.testing.assert_array_equal(result[key], stored, err_msg=key)
    np.testing.assert_array_equal(result[man.graph.output], bundle.vectors["logits"][:k])
    np.testing.assert_array_equal(predictions(man.graph, result), bundle.vectors["pred"][:k])


@pytest.mark.slow
def test_shipped_resnet20_bundle_is_its_checkpoints_export(tmp_path):
    """``asqhw export`` of the shipped ResNet-20 3-bit checkpoint gives the shipped bundle byte for byte."""
    from asqhw.cli import main

    out = tmp_path / "r20"
    assert main(["export", str(ROOT / "models" / "checkpoints" / "resnet20-digits32-b3.pt"), str(out), "--quiet"]) == 0
    shipped = SHIPPED_R20[3]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in shipped.iterdir())
    for file in shipped.iterdir():
        assert (out / file.name).read_bytes() == file.read_bytes(), file.name


def test_a_chain_shaped_graph_generates_the_chain_accelerator_byte_for_byte(digits_graph, format1_bundle, tmp_path):
    """``asqhw verilog`` on the digits graph runs the chain accelerator (``uses_engine`` is False: it is
    smaller and faster for a chain than the engine), and writes the very Verilog, cycle for cycle, that
    the format-1 bundle of the same checkpoint gives."""
    from asqhw.cli import main
    from hw.eda.generate import uses_engine

    _, out, _, _ = digits_graph
    assert not uses_engine(out) and not uses_engine(format1_bundle)
    for name, model in (("graph", out), ("chain", format1_bundle)):
        assert main(["verilog", "--model", str(model), "--out", str(tmp_path / name), "--no-lint"]) == 0
    assert not (tmp_path / "graph" / "graph_engine.v").exists()
    verilog = (tmp_path / "graph" / "asq_accel.v").read_bytes()
    assert verilog == (tmp_path / "chain" / "asq_accel.v").read_bytes() and b"module asq_accel(" in verilog
    generators = [json.loads((tmp_path / name / "manifest.json").read_text())["generator"]
                  for name in ("graph", "chain")]
    assert generators[0]["cycles_per_inference"] == generators[1]["cycles_per_inference"]
    assert [g["source_format_version"] for g in generators] == [2, 1]
