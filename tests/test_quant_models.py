"""Models, module swap and one training step of every scheme."""

import pytest
import torch
from torch import nn

from asqhw.errors import UserError
from quant.layers import QConv2d, QLinear
from quant.models import build_model
from quant.quantize import SCHEMES, calibrate, quantize_model, quantized_layers
from quant.quantizers import (
    CALIBRATION_PERCENTILE,
    ASQActivation,
    FixedStepActivation,
    LSQActivation,
    LSQWeight,
    MaxScaleWeight,
    PowerWeight,
)

# Parameter counts torchvision documents for its models (weights pages / model cards).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "mobilenet_v2": 3_504_872}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_imagenet_models_have_torchvision_sizes_and_keys(name):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    keys = set(model.state_dict())
    expected = {
        "resnet18": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                     "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"],
        "resnet34": ["layer3.5.conv2.weight", "layer4.0.downsample.1.running_var", "fc.bias"],
        "mobilenet_v2": ["features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
                         "features.1.conv.1.weight", "features.1.conv.2.bias", "features.2.conv.0.0.weight",
                         "features.2.conv.1.0.weight", "features.2.conv.2.weight", "features.17.conv.3.running_var",
                         "features.18.0.weight", "features.18.1.bias", "classifier.1.weight", "classifier.1.bias"],
    }[name]
    assert set(expected) <= keys
    # torchvision's key counts (state_dict entries, num_batches_tracked included)
    assert len(keys) == {"resnet18": 122, "resnet34": 218, "mobilenet_v2": 314}[name]


def test_digits_model_follows_the_contract():
    model = build_model("digits")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert {n: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.bias is None)
            for n, m in convs.items()} == {
        "conv1": (1, 16, (3, 3), (1, 1), (1, 1), True),
        "conv2": (16, 16, (3, 3), (2, 2), (1, 1), True),
        "conv3": (16, 32, (3, 3), (2, 2), (1, 1), True),
    }
    assert (model.fc.in_features, model.fc.out_features, model.fc.bias is not None) == (128, 10, True)
    weights = sum(m.weight.numel() for m in [*convs.values(), model.fc])
    assert weights == 144 + 2304 + 4608 + 1280 <= 10_000
    # forward normalises: an all-0.5 image feeds zeros to conv1
    seen = {}
    model.conv1.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    model.eval()(torch.full((2, 1, 8, 8), 0.5))
    assert torch.equal(seen["x"], torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_quantize_digits_edges_8_bit_middle_by_scheme(scheme, bits):
    model = quantize_model(build_model("digits"), scheme, bits)
    layers = dict(quantized_layers(model))
    assert list(layers) == ["conv1", "conv2", "conv3", "fc"]
    first, last = layers["conv1"], layers["fc"]
    # the image input: the model's fixed lossless step, not a learned one
    assert type(first.act_quant) is FixedStepActivation and (first.act_quant.bits, first.act_quant.signed) == (8, True)
    assert float(first.act_quant.step) == model.input_step == 1 / 64
    assert type(last.act_quant) is LSQActivation and (last.act_quant.bits, last.act_quant.signed) == (8, False)
    for edge in (first, last):
        assert type(edge.weight_quant) is MaxScaleWeight and edge.weight_quant.bits == 8
    act_kind, weight_kind = SCHEMES[scheme]
    for name in ("conv2", "conv3"):
        layer = layers[name]
        assert type(layer.act_quant) is (ASQActivation if act_kind == "asq" else LSQActivation)
        assert (layer.act_quant.bits, layer.act_quant.signed) == (bits, False)
        assert layer.weight_quant.bits == bits
        if weight_kind == "int":
            assert type(layer.weight_quant) is LSQWeight
        else:
            assert type(layer.weight_quant) is PowerWeight and layer.weight_quant.kind == weight_kind
        assert layer.weight_quant.codes(layer.weight).shape == layer.weight.shape


@pytest.mark.parametrize("data, pixel_max, zero, k", [(None, 16, 8, 8), ("digits-vary", 255, 128, 1)])
def test_digits_input_coding_is_lossless(data, pixel_max, zero, k):
    """Every pixel value gets its own conv1 code, k (p - zero), exactly, in signed 8 bits."""
    model = quantize_model(build_model("digits", data=data), "asq", 3)
    assert model.pixel_max == pixel_max
    pixels = torch.arange(pixel_max + 1)
    x = model.normalise((pixels.float() / pixel_max).reshape(-1, 1, 1, 1))
    quantizer = model.conv1.act_quant
    codes = quantizer.codes(x).reshape(-1)
    assert codes.tolist() == (k * (pixels - zero)).tolist()
    assert -128 <= int(codes.min()) and int(codes.max()) <= 127
    # the fake-quantized input is the normalised pixel itself: nothing is lost or moved
    assert torch.equal(quantizer(x), x) or torch.allclose(quantizer(x), x, rtol=0, atol=1e-6)
    # the step is a constant of the model: not trained, not in the checkpoint
    assert not any(n.startswith("conv1.act_quant") for n, _ in model.named_parameters())
    assert "conv1.act_quant.step" not in model.state_dict()


def test_digits_plain_normalisation_is_unchanged():
    x = torch.arange(17).float() / 16
    assert torch.equal(build_model("digits").normalise(x), (x - 0.5) / 0.5)


def test_edge_weights_are_calibrated_to_their_range():
    """8-bit edge weights keep each channel's largest weight on code 127, also after the weights move."""
    torch.manual_seed(0)
    model = quantize_model(build_model("digits"), "asq", 3)
    for name in ("conv1", "fc"):
        layer = getattr(model, name)
        for _ in range(2):
            codes = layer.weight_quant.codes(layer.weight)
            assert codes.abs().reshape(codes.shape[0], -1).max(dim=1).values.tolist() == [127] * codes.shape[0]
            with torch.no_grad():
                layer.weight.mul_(torch.linspace(0.5, 2, codes.shape[0]).reshape((-1,) + (1,) * (codes.dim() - 1)))
        assert not any(n.startswith(f"{name}.weight_quant") for n, _ in model.named_parameters())


def test_percentile_step_init_spans_the_codes():
    """``init="percentile"``: the step starts at the calibration percentile of |x| over Q_P."""
    x = torch.rand(4096) * 3
    quantizer = LSQActivation(8, signed=False, init="percentile")
    quantizer(x)
    top = torch.quantile(x.double(), CALIBRATION_PERCENTILE / 100).float()
    assert float(quantizer.step.detach()) == pytest.approx(float(top) / 255, rel=1e-6)
    with pytest.raises(UserError, match="unknown"):
        LSQActivation(8, signed=False, init="minmax")


def test_module_swap_keeps_parameters_and_float_keys():
    model = build_model("resnet20")
    float_keys = set(model.state_dict())
    conv_weight = model.layer2[0].conv1.weight
    quantize_model(model, "asq+post", 4)
    assert model.layer2[0].conv1.weight is conv_weight
    assert float_keys <= set(model.state_dict())
    assert isinstance(model.layer2[0].downsample[0], QConv2d) and isinstance(model.fc, QLinear)
    with pytest.raises(UserError, match="already quantized"):
        quantize_model(model, "lsq", 4)
    with pytest.raises(UserError, match="'asq\\+pot'"):
        quantize_model(build_model("digits"), "asq+pot", 4)


def test_mobilenet_linear_bottleneck_inputs_are_signed():
    model = quantize_model(build_model("mobilenet_v2"), "asq", 4)
    layers = dict(quantized_layers(model))
    assert layers["features.0.0"].act_quant.signed and layers["features.0.0"].act_quant.bits == 8
    assert layers["features.2.conv.0.0"].act_quant.signed  # input: previous block's linear output
    assert not layers["features.2.conv.1.0"].act_quant.signed  # input: after ReLU6
    assert layers["features.18.0"].act_quant.signed
    assert not layers["classifier.1"].act_quant.signed and layers["classifier.1"].act_quant.bits == 8
    # ASQ adapts non-negative (post-ReLU) inputs; a signed bottleneck input gets signed LSQ
    from quant.quantizers import ASQActivation, LSQActivation

    assert type(layers["features.2.conv.0.0"].act_quant) is LSQActivation
    assert type(layers["features.2.conv.1.0"].act_quant) is ASQActivation


def _one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    calibrate(model, x)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every learned quantizer parameter got a gradient signal
    quant_grads = [p.grad.abs().sum().item() for n, p in model.named_parameters()
                   if n.endswith((".step", ".alpha")) or ".adapter." in n]
    if quantized_layers(model):
        assert quant_grads and sum(g > 0 for g in quant_grads) >= 0.9 * len(quant_grads)
    # The first SGD update of each parameter is lr * (grad + wd * p). Every parameter whose update is above
    # float32 resolution must move. (A decay term can cancel a small gradient: it did for one MobileNet step
    # on some thread counts, so "every parameter changed" alone is not a property of the code.)
    ulp = torch.finfo(torch.float32).eps
    movable = {n for n, p in model.named_parameters()
               if ((0.01 * (p.grad + 1e-4 * before[n])).abs() > 4 * ulp * before[n].abs()).any()}
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert movable <= changed, sorted(movable - changed)
    assert len(movable) >= 0.95 * len(before)


@pytest.mark.parametrize("scheme", ["fp", *sorted(SCHEMES)])
def test_one_training_step_resnet20(scheme):
    torch.manual_seed(0)
    model = quantize_model(build_model("resnet20"), scheme, 4)
    _one_step(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))


@pytest.mark.parametrize("scheme", ["fp", *sorted(SCHEMES)])
def test_one_training_step_mobilenet_v2(scheme):
    torch.manual_seed(0)
    model = quantize_model(build_model("mobilenet_v2", num_classes=10), scheme, 3)
    _one_step(model, torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))


@pytest.mark.parametrize(("name", "first", "last"), [("resnet20", "conv1", "fc"), ("resnet18", "conv1", "fc"),
                                                     ("mobilenet_v2", "features.0.0", "classifier.1")])
def test_edge_layers_are_8_bit_in_every_model(name, first, last):
    model = quantize_model(build_model(name), "asq+post", 2)
    layers = quantized_layers(model)
    assert (layers[0][0], layers[-1][0]) == (first, last)
    for _, layer in (layers[0], layers[-1]):
        assert type(layer.act_quant) is LSQActivation and layer.act_quant.bits == 8
        assert type(layer.weight_quant) is MaxScaleWeight and layer.weight_quant.bits == 8
    middle = layers[1:-1]
    # ASQ on every post-ReLU input; signed LSQ on a signed one (MobileNet-V2's bottlenecks)
    assert all(m.act_quant.bits == 2 and type(m.act_quant) is (LSQActivation if m.act_quant.signed else ASQActivation)
               for _, m in middle)
    # MobileNet-V2: 16 expansion convs and features.18 read a linear bottleneck
    assert sum(m.act_quant.signed for _, m in middle) == (17 if name == "mobilenet_v2" else 0)
    assert all(type(m.weight_quant) is PowerWeight and m.weight_quant.bits == 2 for _, m in middle)
