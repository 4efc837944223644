"""asqhw export: bundles of briefly trained digits models (all schemes' paths), round trips, errors.

``asqhw export`` writes format 2 (a graph); the format-1 reader keeps its tests on the format-1 bundle
of the same model (:func:`quant.export.build.export_model`, the chain the format-2 bundle's chain view
equals).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asqhw.cli import main as asqhw_main
from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import FORMAT_VERSION, GRAPH_FORMAT_VERSION, read_bundle, write_bundle
from golden.model import load_bundle, pixels_to_codes, run
from quant.export.fidelity import golden_report

# (scheme, BITS): every path of the exporter: ASQ + POST, LSQ + POT, ASQ + int, LSQ + int at 8.
CASES = [("asq+post", 3), ("lsq+pot", 4), ("asq", 2), ("lsq", 8)]


def _train_briefly(scheme: str, bits: int, epochs: int = 2):
    """A digits model quantized with ``scheme`` and trained for a couple of epochs (seconds)."""
    from quant.data import digits_split
    from quant.models import build_model
    from quant.quantize import calibrate, quantize_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, _, _ = digits_split()
    model = quantize_model(build_model("digits"), scheme, bits)
    calibrate(model, x_train[:256])
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(x_train), 64):
            idx = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@pytest.fixture(scope="module", params=CASES, ids=[f"{s}-b{b}" for s, b in CASES])
def exported(request, tmp_path_factory):
    """(checkpoint path, bundle path) of a briefly trained model, exported with the CLI."""
    from quant.checkpoint import save_checkpoint

    scheme, bits = request.param
    root = tmp_path_factory.mktemp(f"{scheme.replace('+', '_')}-b{bits}")
    model = _train_briefly(scheme, bits)
    ckpt = root / "checkpoint.pt"
    save_checkpoint(ckpt, model, {"model": "digits", "scheme": scheme, "bits": bits, "epoch": 2})
    out = root / "bundle"
    assert asqhw_main(["export", str(ckpt), str(out), "--quiet"]) == 0
    return ckpt, out


@pytest.fixture(scope="module")
def exported_chain(exported, tmp_path_factory):
    """The format-1 bundle (a chain) of the same checkpoint as ``exported``'s format-2 bundle."""
    from quant.checkpoint import load_checkpoint
    from quant.export.build import export_model

    ckpt, _ = exported
    model, meta = load_checkpoint(ckpt)
    out = tmp_path_factory.mktemp("chain") / "bundle"
    export_model(model, dict(meta), out, progress=False)
    return out


def _files(path: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_bundle_contents(exported):
    _, out = exported
    man = json.loads((out / "manifest.json").read_text())
    assert man["format_version"] == GRAPH_FORMAT_VERSION and "layers" not in man
    assert [n["name"] for n in man["graph"]["nodes"]] == ["input", "conv1", "conv2", "conv3", "flatten", "fc"]
    assert set(_files(out)) == {"manifest.json", "vectors.npz", "conv1.weights.mem",
                                "conv2.weights.mem", "conv3.weights.mem", "fc.weights.mem"}
    # one $readmemh word per weight: 144, 2304, 4608, 1280
    counts = [len((out / f"{n}.weights.mem").read_text().split()) for n in ("conv1", "conv2", "conv3", "fc")]
    assert counts == [144, 2304, 4608, 1280]
    assert sum(len(b) for b in _files(out).values()) < 1_000_000
    for node in man["graph"]["nodes"][1:]:
        if node["op"] in ("conv", "fc"):
            assert all(-(2**15) <= m < 2**15 for m in node["requant"]["M"])
            assert node["requant"]["t_width"] < 63


def test_the_chain_view_of_the_export_is_the_format_1_export(exported, exported_chain):
    """The format-2 bundle's chain view (what the chain accelerator reads) equals the format-1 export
    of the same model: layers, input, weights and every golden vector."""
    _, out = exported
    view, chain = load_bundle(out), read_bundle(exported_chain)
    assert chain.manifest.format_version == FORMAT_VERSION
    assert view.layers == chain.layers and view.manifest.input == chain.manifest.input
    assert view.manifest.post_frac_bits == chain.manifest.post_frac_bits
    assert all(np.array_equal(view.weights[k], chain.weights[k]) for k in chain.weights)
    assert sorted(view.vectors) == sorted(chain.vectors)
    for key, value in chain.vectors.items():
        assert np.array_equal(view.vectors[key], value) and view.vectors[key].dtype == value.dtype, key


def test_export_load_export_is_byte_for_byte(exported, tmp_path):
    _, out = exported
    write_bundle(read_bundle(out), tmp_path / "again")
    assert _files(tmp_path / "again") == _files(out)


def test_weights_in_mem_files_are_the_quantizers_codes(exported):
    from quant.checkpoint import load_checkpoint

    ckpt, out = exported
    model, _ = load_checkpoint(ckpt)
    bundle = load_bundle(out)
    for name in ("conv1", "conv2", "conv3", "fc"):
        layer = getattr(model, name)
        expect = layer.weight_quant.codes(layer.weight.detach()).numpy()
        assert np.array_equal(bundle.weights[name], expect)
    # two's complement words on disk for int weights: -1 at 8 bits is "ff"
    words = (out / "conv1.weights.mem").read_text().split()
    codes = bundle.weights["conv1"].reshape(-1)
    assert all(int(w, 16) == (c & 0xFF) for w, c in zip(words, codes, strict=True))


def test_golden_agrees_with_float_model(exported):
    ckpt, out = exported
    report = golden_report(out, ckpt)
    assert report["format_version"] == GRAPH_FORMAT_VERSION and report["vectors_match"]
    assert report["flips"] <= 2
    assert abs(report["golden_top1"] - report["float_top1"]) <= 100 * 2 / 360
    for row in report["teacher_forced"]:
        assert all(v for k, v in row.items() if k.endswith("within_bound")), row


def test_golden_agrees_with_float_model_on_a_format_1_bundle(exported, exported_chain):
    ckpt, _ = exported
    report = golden_report(exported_chain, ckpt)
    assert report["vectors_match"]
    assert report["flips"] <= 2
    assert abs(report["golden_top1"] - report["float_top1"]) <= 100 * 2 / 360
    for row in report["teacher_forced"]:
        assert row["requant_within_bound"], row
        if "beta_within_bound" in row:
            assert row["beta_within_bound"] and row["asq_within_bound"], row
    # the first layer sees identical codes: its input is exact
    assert report["layers"][0]["codes_differ"] == 0.0


def test_golden_vectors_are_reproduced_from_pixels(exported):
    _, out = exported
    bundle = load_bundle(out)
    vec = bundle.vectors
    result = run(bundle, pixels_to_codes(bundle, vec["pixels"]))
    assert np.array_equal(result["conv1.in"], vec["conv1.in"])
    assert np.array_equal(result["logits"], vec["logits"])
    assert np.array_equal(result["pred"], vec["pred"])
    assert vec["labels"].shape == (360,)


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def bundle_copy(exported_chain, tmp_path):
    """A copy of the format-1 bundle, for the format-1 reader's refusals."""
    dst = tmp_path / "b"
    shutil.copytree(exported_chain, dst)
    return dst


def _edit_manifest(path: Path, edit) -> None:
    man = json.loads((path / "manifest.json").read_text())
    edit(man)
    (path / "manifest.json").write_text(json.dumps(man))


def test_other_format_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=FORMAT_VERSION + 98))
    with pytest.raises(UserError, match=r"manifest\.json: format_version 99 is not supported "
                       r"\(this asqhw reads 1 and 2\)"):
        read_bundle(bundle_copy)


def test_a_chain_manifest_claiming_format_2_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(UserError, match=r"manifest\.json: field 'layers' unknown here"):
        read_bundle(bundle_copy)


def test_missing_mem_is_refused(bundle_copy):
    (bundle_copy / "conv2.weights.mem").unlink()
    with pytest.raises(UserError, match=r"conv2\.weights\.mem: missing"):
        read_bundle(bundle_copy)


def test_truncated_mem_is_refused(bundle_copy):
    mem = bundle_copy / "conv3.weights.mem"
    mem.write_text("".join(mem.read_text().splitlines(keepends=True)[:-7]))
    with pytest.raises(UserError, match=r"conv3\.weights\.mem: 4601 words, expected 4608"):
        read_bundle(bundle_copy)


def test_bad_word_in_mem_is_refused(bundle_copy):
    mem = bundle_copy / "fc.weights.mem"
    lines = mem.read_text().splitlines()
    lines[5] = "zz"
    mem.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"fc\.weights\.mem: line 6 'zz' is not hex"):
        read_bundle(bundle_copy)


def test_disagreeing_shapes_are_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["layers"][2].update(in_shape=[16, 8, 8]))
    with pytest.raises(UserError, match=r"layers\[2\] \(conv3\): in_shape \[16, 8, 8\] disagrees"):
        read_bundle(bundle_copy)


def test_wrong_constant_count_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["layers"][1]["requant"]["M"].pop())
    with pytest.raises(UserError, match=r"layers\[1\] \(conv2\)\.requant: M has 15 entries, expected 16"):
        read_bundle(bundle_copy)


@pytest.mark.parametrize("bits", [1, 9])
def test_bits_outside_2_to_8_are_refused(bundle_copy, bits):
    _edit_manifest(bundle_copy, lambda m: m.update(bits=bits))
    with pytest.raises(UserError, match=f"bits {bits} outside 2-8"):
        read_bundle(bundle_copy)


def test_corrupt_vectors_are_refused(bundle_copy):
    (bundle_copy / "vectors.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(UserError, match=r"vectors\.npz: not a readable \.npz"):
        read_bundle(bundle_copy)


def test_checkpoint_of_unknown_model_is_refused(exported, tmp_path):
    ckpt, _ = exported
    payload = torch.load(ckpt, weights_only=True)
    payload["model"] = "resnet18"
    bad = tmp_path / "resnet.pt"
    torch.save(payload, bad)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"resnet\.pt: field 'model' is 'resnet18'"):
        from quant.export.build import export_checkpoint

        export_checkpoint(bad, out, progress=False)
    assert not out.exists()


def test_cli_reports_errors_and_leaves_nothing_behind(exported, tmp_path, capsys):
    ckpt, _ = exported
    payload = torch.load(ckpt, weights_only=True)
    payload["scheme"] = "fp"
    bad = tmp_path / "fp.pt"
    torch.save(payload, bad)
    out = tmp_path / "out"
    assert asqhw_main(["export", str(bad), str(out)]) == 2
    assert "field 'scheme' is 'fp'" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_failed_export_keeps_the_old_bundle(exported, tmp_path, monkeypatch):
    """A failure half-way (here: inside the golden run) leaves an existing OUTDIR as it was."""
    import golden.graph
    import quant.export.build

    ckpt, out = exported
    dst = tmp_path / "bundle"
    shutil.copytree(out, dst)
    before = _files(dst)

    def boom(*args, **kwargs):
        raise UserError("simulated failure")

    monkeypatch.setattr(golden.graph, "run_graph", boom)
    with pytest.raises(UserError, match="simulated failure"):
        quant.export.build.export_checkpoint(ckpt, dst, progress=False)
    assert _files(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_power_weights_wider_than_the_encoding_are_refused():
    """POST is offered up to 5 bits; a 6-bit POST checkpoint cannot be exported."""
    from quant.export.fold import weight_entry
    from quant.models import build_model
    from quant.quantize import quantize_model

    model = quantize_model(build_model("digits"), "asq+post", 6)
    with pytest.raises(UserError, match="conv2"):
        weight_entry("conv2", model.conv2, formats.default_post_frac_bits(6))


def test_default_post_frac_bits_is_recorded(exported):
    _, out = exported
    man = json.loads((out / "manifest.json").read_text())
    assert man["post_frac_bits"] == formats.default_post_frac_bits(man["bits"])


def test_post_frac_bits_option_sets_the_table_precision(exported, tmp_path, capsys):
    """--post-frac-bits F: recorded, in the unit exponent, the product range and the golden run."""
    ckpt, out = exported
    layers0 = load_bundle(out).layers
    dst = tmp_path / "f2"
    assert asqhw_main(["export", str(ckpt), str(dst), "--post-frac-bits", "2", "--quiet"]) == 0
    assert "post_frac_bits=2" in capsys.readouterr().out
    bundle = load_bundle(dst)
    man = bundle.manifest
    assert man.post_frac_bits == 2
    for layer in man.layers[1:3]:
        w = layer.weight
        if w.kind == "post":
            k = arith.post_k(w.bits)
            assert w.unit_exp == k // 2 + 2
            amax = (1 << layer.act_in.bits) - 1
            # hand rule: the largest product is amax << (K/2) << F (it beats T[amax] << (K/2 - 1))
            assert list(layer.product_range) == [-((amax << (k // 2)) << 2), (amax << (k // 2)) << 2]
        else:  # F does not touch int/POT layers
            same = next(ly for ly in layers0 if ly.name == layer.name)
            assert layer.product_range == same.product_range
            assert w.unit_exp == same.weight.unit_exp
    result = run(bundle, pixels_to_codes(bundle, bundle.vectors["pixels"]))
    assert np.array_equal(result["logits"], bundle.vectors["logits"])


@pytest.mark.parametrize("bad", ["-1", "17"])
def test_bad_post_frac_bits_is_refused(exported, tmp_path, capsys, bad):
    ckpt, _ = exported
    assert asqhw_main(["export", str(ckpt), str(tmp_path / "x"), "--post-frac-bits", bad, "--quiet"]) != 0
    assert f"--post-frac-bits {bad}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_hw_params_of_a_layer(exported):
    from hw.testing import layer_hw_params

    _, out = exported
    bundle = load_bundle(out)
    p = layer_hw_params(bundle, "conv2")
    layer = bundle.layer("conv2")
    assert p["acc_width"] == arith.acc_width(144, *p["product_range"])
    assert p["weights"].shape == (16, 16, 3, 3)
    if p["weight_kind"] == "post":
        assert p["post_table"] == arith.post_table(layer.act_in.bits,
                                                   bundle.manifest.post_frac_bits).tolist()
    assert (p["asq"] is not None) == (layer.act_in.quant == "asq")


@pytest.mark.parametrize("version", [GRAPH_FORMAT_VERSION, FORMAT_VERSION])
def test_eval_golden_cli_json(exported, exported_chain, capsys, version):
    ckpt, out = exported
    out = out if version == GRAPH_FORMAT_VERSION else exported_chain
    assert asqhw_main(["eval", str(ckpt), "--golden", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["float_source"] == "checkpoint"
    assert report["n_test"] == 360 and report["flips"] <= 2
    if version == FORMAT_VERSION:
        assert [row["layer"] for row in report["layers"]] == ["conv1", "conv2", "conv3", "fc", "logits"]
    else:
        assert [row["node"] for row in report["nodes"]] == ["conv1", "conv2", "conv3"]
    # golden top-1 recomputed from the labels equals what the exporter recorded
    man = json.loads((out / "manifest.json").read_text())
    assert report["golden_top1"] == pytest.approx(100 * man["accuracy"]["golden"])


def test_eval_golden_reports_the_beta_spread_of_every_asq_layer(exported, capsys):
    """`asqhw eval --golden BUNDLE --json`: per ASQ layer, golden's beta over the test vectors."""
    _, out = exported
    assert asqhw_main(["eval", "--golden", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bundle = load_bundle(out)
    asq_layers = [layer for layer in bundle.layers if layer.act_in.asq is not None]
    assert [row["layer"] for row in report["beta_spread"]] == [layer.name for layer in asq_layers]
    for row, layer in zip(report["beta_spread"], asq_layers, strict=True):
        codes = bundle.vectors[f"{layer.name}.beta"].reshape(-1)
        beta = codes * 2.0 ** -layer.act_in.asq.G
        assert row["distinct"] == len(np.unique(codes))
        assert (row["min"], row["median"], row["max"]) == (beta.min(), np.median(beta), beta.max())
        assert row["spread"] == pytest.approx((beta.max() - beta.min()) / np.median(beta))
    # the human-readable report shows the same rows
    assert asqhw_main(["eval", "--golden", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("ASQ beta" in text) == bool(asq_layers)
    for row in report["beta_spread"]:
        line = next(ln for ln in text.splitlines() if ln.startswith(row["layer"] + " ") and "%" in ln)
        assert f"{100 * row['spread']:.2f}%" in line and str(row["distinct"]) in line.split()


@pytest.mark.parametrize("version", [GRAPH_FORMAT_VERSION, FORMAT_VERSION])
def test_golden_report_without_checkpoint_uses_the_export_record(exported, exported_chain, version):
    _, out = exported
    out = out if version == GRAPH_FORMAT_VERSION else exported_chain
    report = golden_report(out)
    man = json.loads((out / "manifest.json").read_text())
    assert report["float_source"] == "export"
    assert report["flips"] == man["accuracy"]["flips"]
    table = "nodes" if version == GRAPH_FORMAT_VERSION else "layers"
    assert report[table] == man["accuracy"][table]


def test_export_refuses_to_replace_a_folder_that_is_not_a_bundle(exported, tmp_path):
    ckpt, _ = exported
    other = tmp_path / "models"
    other.mkdir()
    (other / "README.md").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a model bundle"):
        from quant.export.build import export_checkpoint

        export_checkpoint(ckpt, other, progress=False)
    assert (other / "README.md").read_text() == "keep me"


@pytest.mark.parametrize("bits", [1, 9])
def test_checkpoint_bits_outside_2_to_8_are_refused(exported, tmp_path, bits):
    from quant.export.build import export_checkpoint

    ckpt, _ = exported
    payload = torch.load(ckpt, weights_only=True)
    payload["bits"] = bits
    bad = tmp_path / f"b{bits}.pt"
    torch.save(payload, bad)
    with pytest.raises(UserError, match=rf"b{bits}\.pt: field 'bits' is {bits}; BITS must be 2-8"):
        export_checkpoint(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_finds_its_network_by_model_and_data():
    """A digits checkpoint trained on digits-vary exports against digits-vary's split and pixels."""
    from quant.export.networks import network_for

    assert network_for({"model": "digits", "config": {}}).name == "digits"
    assert network_for({"model": "digits", "config": {"data": "digits"}}).name == "digits"
    vary = network_for({"model": "digits", "config": {"data": "digits-vary"}})
    assert (vary.name, vary.model, vary.pixel_max) == ("digits-vary", "digits", 255)
    with pytest.raises(UserError, match="trained on data 'mnist'"):
        network_for({"model": "digits", "config": {"data": "mnist"}})
    r20 = network_for({"model": "resnet20", "config": {"data": "digits32"}})
    assert (r20.name, r20.input_shape, r20.pixel_max, r20.bn_of) == ("resnet20-digits32", [3, 32, 32], 16, {})
    with pytest.raises(UserError, match="the resnet20 model was trained on data '/data/cifar'; export knows digits32"):
        network_for({"model": "resnet20", "config": {"data": "/data/cifar"}})
    with pytest.raises(UserError, match="export supports the models digits, resnet20 only"):
        network_for({"model": "resnet18", "config": {}})


def test_shipped_models_need_update_shipped(exported, tmp_path, monkeypatch, capsys):
    """Every folder under the repository's models/ is refused without --update-shipped."""
    import quant.export.build

    assert quant.export.build.SHIPPED_MODELS == Path(__file__).resolve().parents[1] / "models"
    ckpt, out = exported
    models = tmp_path / "models"
    shutil.copytree(out, models / "digits-b3")
    before = _files(models / "digits-b3")
    monkeypatch.setattr(quant.export.build, "SHIPPED_MODELS", models)
    for dst in (models / "digits-b3", models / "new-bundle"):
        assert asqhw_main(["export", str(ckpt), str(dst), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"asqhw: error: {dst} is inside the shipped models folder {models}: pass --update-shipped "
                       "to replace a shipped bundle (make export does), or give a folder outside it")
    assert _files(models / "digits-b3") == before and sorted(p.name for p in models.iterdir()) == ["digits-b3"]
    assert asqhw_main(["export", str(ckpt), str(models / "digits-b3"), "--update-shipped", "--quiet"]) == 0
    assert _files(models / "digits-b3") == _files(out)  # the same checkpoint exports the same bytes
    assert sorted(p.name for p in models.iterdir()) == ["digits-b3"]
