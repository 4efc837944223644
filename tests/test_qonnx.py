"""QONNX export: the shipped digits checkpoints as QONNX models, run with qonnx's executor and
compared with the float fake-quant PyTorch model on the digits test split."""

import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from asqhw.cli import main
from quant.checkpoint import load_checkpoint
from quant.export.networks import network_for
from quant.export.qonnx import QONNX_DOMAIN, build_qonnx, compare, lower_to_onnx, run, run_onnxruntime

CHECKPOINTS = Path(__file__).resolve().parents[1] / "models" / "checkpoints"
# Largest |logit difference| allowed when every layer input code agrees: float32 summation order
# (ONNX Runtime's convolutions vs PyTorch's) and x / s against PyTorch's x * (1 / s).
LOGIT_TOLERANCE = 1e-4
# A value within a float32 rounding of a code boundary may land on the other side of it (x / s in
# the graph, x * (1 / s) in PyTorch): measured, one of digits-b2's 368,640 conv2 input codes (with
# the checkpoints trained before, one 8-bit fc code of digits-b8 instead). One code times its weights
# moves the logits by up to this.
ONE_CODE_TOLERANCE = 0.1
CASES = {  # checkpoint -> (max |dlogit|, most input codes that may differ in one layer)
    "digits-b2": (ONE_CODE_TOLERANCE, 1),
    "digits-vary-b3": (LOGIT_TOLERANCE, 0),
}


@pytest.fixture(scope="module")
def loaded():
    """checkpoint name -> (model, meta, test images), loaded once."""
    cache = {}

    def load(name):
        if name not in cache:
            model, meta = load_checkpoint(CHECKPOINTS / f"{name}.pt")
            _, _, x_test, _ = network_for(meta).split()
            cache[name] = (model, meta, x_test)
        return cache[name]

    return load


def _export(tmp_path, name, capsys) -> onnx.ModelProto:
    out = tmp_path / f"{name}.onnx"
    assert main(["export", "--format", "qonnx", str(CHECKPOINTS / f"{name}.pt"), str(out)]) == 0
    assert "agree on 360 of 360" in capsys.readouterr().out
    return onnx.load(out)


@pytest.mark.parametrize("name", ["digits-b3", "digits-b4", "digits-b8"])
def test_exported_file_agrees_with_float_model(tmp_path, capsys, loaded, name):
    """The written .onnx file, run by qonnx's executor on the 360 test images: every prediction, every
    quantized weight (bit for bit), every layer input code as the float model's; logits within 1e-4."""
    proto = _export(tmp_path, name, capsys)
    onnx.checker.check_model(proto)
    model, _, x_test = loaded(name)
    agreement = compare(proto, model, x_test)
    assert agreement.n == 360 and agreement.agree == 360
    assert all(agreement.weights_exact.values()), agreement.weights_exact
    assert min(agreement.codes_agree.values()) == 1.0, agreement.codes_agree
    assert agreement.max_abs_logit < LOGIT_TOLERANCE
    assert max(agreement.step_rel_err.values()) < 1e-4  # ASQ's s*beta per sample, float32 rounding only
    props = {p.key: p.value for p in proto.metadata_props}
    assert '"agree": 360' in props["asqhw.agreement"] and props["asqhw.model"] == "digits"


@pytest.mark.parametrize("name", ["digits-b2", "digits-vary-b3"])
def test_other_shipped_checkpoints_agree(loaded, name):
    model, meta, x_test = loaded(name)
    tolerance, codes = CASES[name]
    agreement = compare(build_qonnx(model, meta), model, x_test)
    assert agreement.agree == agreement.n == 360
    assert all(agreement.weights_exact.values())
    assert max(differ for differ, _ in agreement.codes_differ.values()) <= codes
    assert agreement.max_abs_logit < tolerance


@pytest.mark.parametrize("name", ["digits-b3", "digits-b8"])
def test_standard_onnx_export_runs_on_onnxruntime(tmp_path, capsys, loaded, name):
    """--format onnx: standard nodes only; onnxruntime's logits equal qonnx's executor's on the QONNX
    model exactly, so they agree with the float model as the QONNX model does."""
    out = tmp_path / f"{name}.onnx"
    assert main(["export", "--format", "onnx", str(CHECKPOINTS / f"{name}.pt"), str(out)]) == 0
    assert "vs qonnx's executor: max |dlogit| 0.00e+00" in capsys.readouterr().out
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    assert {n.domain for n in proto.graph.node} == {""}
    assert {op.domain for op in proto.opset_import} <= {"", "ai.onnx"}
    model, meta, x_test = loaded(name)
    logits = run_onnxruntime(proto, x_test.numpy())
    assert np.array_equal(logits, run(build_qonnx(model, meta), x_test.numpy())["logits"])
    with torch.no_grad():
        expected = model(x_test).numpy()
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    assert np.max(np.abs(logits - expected)) < LOGIT_TOLERANCE  # no input code differs on these two
    assert '"agree": 360' in {p.key: p.value for p in proto.metadata_props}["asqhw.agreement"]


def test_lowering_keeps_the_asq_step_computed(loaded):
    """The lowered ASQ quantizer divides by the computed s*beta, not by a constant."""
    model, meta, _ = loaded("digits-b3")
    lowered = lower_to_onnx(build_qonnx(model, meta))
    nodes = {n.output[0]: n for n in lowered.graph.node}
    inits = {t.name for t in lowered.graph.initializer}
    assert nodes["conv2.input_q.u"].input[1] == "conv2.act_scale" and "conv2.act_scale" not in inits
    assert nodes["conv2.act_scale"].op_type == "Mul"
    assert "conv2.weight_q" in inits  # the weight quantizers are folded into constants


@pytest.mark.parametrize("scheme, bits", [
    ("lsq+pot", 3), ("lsq+pot", 4), ("asq+post", 2), ("asq+post", 5), ("lsq", 4), ("asq", 3),
])
def test_every_weight_kind_and_width_is_bit_exact(loaded, scheme, bits):
    """Untrained (calibrated) models of the schemes and widths no shipped checkpoint has: POT weights,
    ternary (2-bit) and 5-bit POST, LSQ weights and activations. The executor's quantized weights are
    PyTorch's bit for bit, and the float and QONNX models agree."""
    from quant.models import build_model
    from quant.quantize import calibrate, quantize_model

    torch.manual_seed(0)
    model = quantize_model(build_model("digits"), scheme, bits)
    x_train, _, x_test, _ = network_for({"model": "digits"}).split()
    calibrate(model, x_train[:256])
    model.eval()
    agreement = compare(build_qonnx(model, {"model": "digits", "scheme": scheme, "bits": bits}), model, x_test)
    assert all(agreement.weights_exact.values()), agreement.weights_exact
    assert agreement.agree == agreement.n
    assert max(differ for differ, _ in agreement.codes_differ.values()) <= 1


def test_graph_expresses_post_and_asq_with_qonnx_nodes(loaded):
    """POST weights are two power-of-two FloatQuants (even and odd exponents) of constant levels,
    scaled by alpha and alpha sqrt(1/2); ASQ's Quant takes a computed scale, LSQ's a constant one."""
    model, meta, _ = loaded("digits-b3")
    proto = build_qonnx(model, meta)
    nodes = {n.output[0]: n for n in proto.graph.node}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    for layer in ("conv2", "conv3"):
        for part in ("even", "odd"):
            power = nodes[f"{layer}.weight_{part}_q.levels"]
            assert power.op_type == "FloatQuant" and power.domain == QONNX_DOMAIN
            assert nodes[f"{layer}.weight_{part}_q"].op_type == "Mul"
        assert nodes[f"{layer}.weight_q"].op_type == "Add"
        # 3-bit POST: magnitudes 1, 2^(-1/2), 2^(-1): even exponents {1, 1/2} times alpha, odd {1} times
        # alpha sqrt(1/2); a weight is in one of the two parts
        even, odd = inits[f"{layer}.weight_even"], inits[f"{layer}.weight_odd"]
        assert set(np.unique(np.abs(even))) == {0.0, 0.5, 1.0} and set(np.unique(np.abs(odd))) == {0.0, 1.0}
        assert not np.any((even != 0) & (odd != 0))
        assert np.array_equal(inits[f"{layer}.weight_alpha_odd"],
                              inits[f"{layer}.weight_alpha"] * np.float32(math.sqrt(0.5)))
        quant = nodes[f"{layer}.input_q"]
        assert quant.op_type == "Quant" and quant.domain == QONNX_DOMAIN
        assert quant.input[1] == f"{layer}.act_scale" and quant.input[1] not in inits  # computed
        assert nodes[f"{layer}.asq.gap"].op_type == "GlobalAveragePool"
    assert nodes["fc.input_q"].input[1] == "fc.act_step"  # LSQ: a constant step
    assert nodes["conv1.weight_q"].op_type == nodes["fc.weight_q"].op_type == "Quant"


def test_qonnx_types_the_power_of_two_levels(loaded):
    """qonnx's datatype inference reads the unit-scale FloatQuants as minifloats without mantissa."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes

    model, meta, _ = loaded("digits-b4")  # 4-bit POST: k = 0 .. 6, even j = 0 .. 3, odd j = 0 .. 2
    typed = ModelWrapper(build_qonnx(model, meta)).transform(InferDataTypes(allow_scaledint_dtypes=True))
    assert typed.get_tensor_datatype("conv2.weight_even_q.levels").name == "FLOAT<3,0,4>"
    assert typed.get_tensor_datatype("conv2.weight_odd_q.levels").name == "FLOAT<2,0,3>"
    assert typed.get_tensor_datatype("fc.input_q").name == "SCALEDINT<8>"


def _perturbed(proto, edit) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    edit(copy.graph)
    return copy


def test_comparison_detects_wrong_post_levels(loaded):
    """Odd POST exponents scaled by 0.7 instead of sqrt(1/2): the weights are no longer PyTorch's and
    the logits move, so the agreement checks above would fail."""
    model, meta, x_test = loaded("digits-b3")
    proto = build_qonnx(model, meta)

    def edit(graph):
        for t in graph.initializer:
            if t.name == "conv2.weight_alpha_odd":
                alpha = onnx.numpy_helper.to_array(t) / np.float32(math.sqrt(0.5)) * np.float32(0.7)
                t.CopyFrom(onnx.numpy_helper.from_array(alpha.astype(np.float32), t.name))

    agreement = compare(_perturbed(proto, edit), model, x_test)
    assert not agreement.weights_exact["conv2"] and agreement.weights_exact["conv3"]
    assert agreement.codes_agree["conv3"] < 1.0
    assert agreement.max_abs_logit > 100 * LOGIT_TOLERANCE


def test_comparison_detects_asq_step_without_beta(loaded):
    """conv2 quantized with the plain learned step s instead of s*beta (LSQ instead of ASQ): about a
    tenth of its codes change, and every layer after it drifts."""
    model, meta, x_test = loaded("digits-b3")
    proto = build_qonnx(model, meta)

    def edit(graph):
        for node in graph.node:
            if node.output[0] == "conv2.input_q":
                node.input[1] = "conv2.act_step"

    agreement = compare(_perturbed(proto, edit), model, x_test)
    assert agreement.codes_agree["conv2"] < 0.99
    assert agreement.max_abs_logit > 100 * LOGIT_TOLERANCE


def test_batch_one_model_runs_one_image(loaded):
    """The file holds a batch-1 graph (what QONNX consumers expect); run on one image it gives the
    float model's logits."""
    model, meta, x_test = loaded("digits-b3")
    proto = build_qonnx(model, meta)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    out = run(proto, x_test[:1].numpy())["logits"]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x_test[:1]).numpy(), atol=LOGIT_TOLERANCE)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("asqhw: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("out, expect", [
    ("model.txt", "ending in .onnx"),
    ("folder.onnx", "is a folder"),
])
def test_bad_output_path_refused(tmp_path, capsys, out, expect):
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", "--format", "qonnx", str(CHECKPOINTS / "digits-b3.pt"), str(tmp_path / out)]) == 2
    assert expect in _one_line_error(capsys)


def test_shipped_models_folder_refused(capsys):
    out = CHECKPOINTS.parent / "digits-b3.onnx"
    assert main(["export", "--format", "qonnx", str(CHECKPOINTS / "digits-b3.pt"), str(out)]) == 2
    assert "--update-shipped" in _one_line_error(capsys)
    assert not out.exists()


def test_post_frac_bits_refused(tmp_path, capsys):
    args = ["export", "--format", "qonnx", "--post-frac-bits", "3", str(CHECKPOINTS / "digits-b3.pt"),
            str(tmp_path / "m.onnx")]
    assert main(args) == 2
    assert "--post-frac-bits" in _one_line_error(capsys)


def _checkpoint_with(tmp_path, **fields) -> Path:
    payload = torch.load(CHECKPOINTS / "digits-b3.pt", map_location="cpu", weights_only=True)
    payload.update(fields)
    payload["config"] = {**payload["config"], **fields}  # as a run of that model or scheme records it
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("fields, expect", [
    ({"model": "resnet18"}, "export supports the models"),
    ({"scheme": "fp", "bits": None}, "needs a quantized checkpoint"),
])
def test_unsupported_checkpoint_refused_and_previous_file_kept(tmp_path, capsys, fields, expect):
    """A missing or unsupported checkpoint: one line, exit 2, an existing OUT untouched, no temporaries."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    assert main(["export", "--format", "qonnx", str(tmp_path / "missing.pt"), str(out)]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert main(["export", "--format", "qonnx", str(_checkpoint_with(tmp_path, **fields)), str(out)]) == 2
    assert expect in _one_line_error(capsys)
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["edited.pt", "m.onnx"]


def test_docs_agreement_table_is_the_measured_one(loaded):
    """docs/qonnx.md's agreement table (predictions, weights, codes that differ) is what compare()
    measures now."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "qonnx.md").read_text()
    rows = [line.split("|")[1:-1] for line in doc.splitlines() if line.startswith("| digits-")]
    assert [r[0].strip() for r in rows] == ["digits-b2", "digits-b3", "digits-b4", "digits-b8", "digits-vary-b3"]
    for name, scheme, predictions, _, weights, codes, *_ in (map(str.strip, r) for r in rows):
        model, meta, x_test = loaded(name)
        agreement = compare(build_qonnx(model, meta), model, x_test)
        differ = ", ".join(f"{k}: {d}" for k, (d, _) in agreement.codes_differ.items() if d) or "none"
        assert (scheme, predictions, weights, codes) == (
            meta["scheme"], f"{agreement.agree}/{agreement.n}",
            "bit-exact" if all(agreement.weights_exact.values()) else "not bit-exact", differ), name
