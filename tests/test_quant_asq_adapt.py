"""ASQ that adapts: the digits-vary data set, the adapter's init, the step gradient scale per sample,
the adapter's own parameter group, and training determinism."""

import argparse
import math

import numpy as np
import pytest
import torch

import quant.cli
from asqhw.errors import UserError
from quant.data import (
    EXPOSURE_GAIN_RANGE,
    EXPOSURE_GAMMA_RANGE,
    EXPOSURE_OFFSET_RANGE,
    digits_split,
    digits_vary_split,
    expose,
    make_loaders,
)
from quant.models import build_model
from quant.quantize import quantize_model
from quant.quantizers import ASQActivation, LSQActivation, activation_grad_scale, make_adapter
from quant.train import CHECKPOINT_NAME, TrainConfig, fp_cache_dir, parameter_groups, run_training
from studies.asq_adapt import AdapterProbe, beta_stats

# ---------------------------------------------------------------- digits-vary


def _per_image(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(len(x), -1).double()
    return flat.mean(dim=1).numpy(), flat.std(dim=1).numpy()


def test_digits_vary_is_deterministic_and_keeps_the_digits_split():
    first = digits_vary_split(with_exposure=True)
    again = digits_vary_split(with_exposure=True)
    for a, b in zip(first[:4], again[:4], strict=True):
        assert torch.equal(a, b)
    assert all(np.array_equal(first[4][k], again[4][k]) for k in ("gain", "gamma", "offset"))
    plain = digits_split()
    assert [t.shape for t in first[:4]] == [t.shape for t in plain]
    # same images in the same order: same labels, and each exposed image is expose() of the plain one
    assert torch.equal(first[1], plain[1]) and torch.equal(first[3], plain[3])
    exposure = first[4]
    rebuilt = expose(plain[2][:, 0].numpy(), exposure["gain"], exposure["gamma"], exposure["offset"])
    assert np.array_equal(rebuilt, first[2][:, 0].numpy())


def test_digits_vary_exposure_by_hand_and_8_bit_pixels():
    image = np.array([[[0.0, 0.25, 1.0]]])
    # offset + (1 - offset) * gain * x ** gamma = 0.1 + 0.9 * 0.5 * (0, 0.0625, 1), then round(255 v) / 255
    expected = np.floor(np.array([0.1, 0.1 + 0.45 * 0.0625, 0.55]) * 255 + 0.5) / 255
    assert expose(image, [0.5], [2.0], [0.1])[0, 0].tolist() == pytest.approx(expected.tolist(), abs=1e-7)
    x_train, _, x_test, _, exposure = digits_vary_split(with_exposure=True)
    for images in (x_train, x_test):
        assert 0.0 <= images.min().item() and images.max().item() <= 1.0
        assert torch.equal(torch.floor(images * 255 + 0.5) / 255, images.double().mul(255).round().div(255).float())
    for name, (low, high) in (("gain", EXPOSURE_GAIN_RANGE), ("gamma", EXPOSURE_GAMMA_RANGE),
                              ("offset", EXPOSURE_OFFSET_RANGE)):
        assert low <= exposure[name].min() and exposure[name].max() <= high


def test_digits_vary_statistics_really_vary_where_plain_digits_do_not():
    # The brightest-to-darkest ratio of the images' contrast (per-image pixel std, 95th / 5th
    # percentile): plain digits barely vary; digits-vary spans several times that.
    _, _, vary, _ = digits_vary_split()
    _, _, plain, _ = digits_split()
    vary_mean, vary_std = _per_image(vary)
    plain_mean, plain_std = _per_image(plain)
    ratio = np.percentile(vary_std, 95) / np.percentile(vary_std, 5)
    plain_ratio = np.percentile(plain_std, 95) / np.percentile(plain_std, 5)
    assert plain_ratio < 1.5 and ratio > 4.0
    assert vary_mean.std() > 2.5 * plain_mean.std()
    # the exposure explains it: contrast grows with the gain
    gain = digits_vary_split(with_exposure=True)[4]["gain"]
    assert np.corrcoef(np.log(gain), np.log(vary_std))[0, 1] > 0.7


def test_make_loaders_selects_the_variant_and_rejects_unknown_names():
    _, test = make_loaders("digits", "digits-vary", 400)
    x, y = next(iter(test))
    _, _, x_vary, y_vary = digits_vary_split()
    assert torch.equal(x, x_vary) and torch.equal(y, y_vary)
    _, test = make_loaders("digits", None, 400)
    assert torch.equal(next(iter(test))[0], digits_split()[2])
    with pytest.raises(UserError, match="digits-vary"):
        make_loaders("digits", "digits-dark", 64)


def test_float_start_of_a_variant_is_cached_apart():
    assert fp_cache_dir("build/train/digits-asq-b2", "digits").name == "digits-fp"
    assert fp_cache_dir("build/train/digits-asq-b2", "digits", "digits-vary").name == "digits-digits-vary-fp"


# ---------------------------------------------------------------- adapter init


def test_paper_init_keeps_n_0_001_and_bias_1_and_beta_near_one():
    torch.manual_seed(0)
    last = make_adapter(512)[2]  # 128 weights
    assert last.bias.item() == 1.0
    assert 0.008 < last.weight.std().item() < 0.012 and abs(last.weight.mean().item()) < 0.003
    q = ASQActivation(4, channels=512)
    q.adapter_init = "paper"
    before = q.adapter[2].weight.detach().clone()
    x = torch.relu(torch.randn(32, 512, 4, 4))
    q.initialize(x)
    assert torch.equal(q.adapter[2].weight, before)  # left as drawn
    beta = q.beta(x)
    assert (beta - 1).abs().max().item() < 0.1  # close to 1, not shrunk to 2e-3


def test_shrunk_init_bounds_beta_on_the_first_batch():
    torch.manual_seed(0)
    q = ASQActivation(4, channels=512)
    q.adapter_init = "shrunk"
    x = torch.relu(torch.randn(32, 512, 4, 4) * 3)
    q.initialize(x)
    assert (q.beta(x) - 1).abs().max().item() <= 2e-3 + 1e-6
    q.adapter_init = "wild"
    q.initialized.fill_(False)
    with pytest.raises(UserError, match="adapter init"):
        q.initialize(x)


# ---------------------------------------------------------------- step gradient scale


def test_step_gradient_scale_per_sample_by_hand():
    x = torch.tensor([[0.3, 0.74], [2.0, -0.2]], requires_grad=True)  # B = 2 samples of 2 features
    q = LSQActivation(2, signed=False)  # Q_P = 3
    q.step_grad_scale = "sample"
    q.initialize(x.detach())
    with torch.no_grad():
        q.step.fill_(0.5)
    (q(x) * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    # dL/ds = g * 8.44 (as in the batch-counting test), g = 1 / sqrt(Q_P * C) = 1 / sqrt(3 * 2)
    assert q.step.grad.item() == pytest.approx(8.44 / math.sqrt(6), rel=1e-5)
    assert activation_grad_scale(3, torch.zeros(64, 16, 4, 4), "sample") == pytest.approx(1 / math.sqrt(3 * 256))
    assert activation_grad_scale(3, torch.zeros(64, 16, 4, 4), "batch") == pytest.approx(1 / math.sqrt(3 * 64 * 256))
    with pytest.raises(UserError, match="gradient scale"):
        activation_grad_scale(3, x, "epoch")


def test_asq_step_gradient_per_sample_is_sqrt_batch_times_the_batch_counting_one():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 2, 2)
    grads = {}
    for counts in ("batch", "sample"):
        q = ASQActivation(3, channels=3)
        torch.manual_seed(1)
        q.adapter = make_adapter(3)
        q.step_grad_scale = counts
        q.initialize(x)
        (q(x) * torch.linspace(-1, 1, x.numel()).reshape(x.shape)).sum().backward()
        grads[counts] = (q.step.grad.item(), q.adapter[0].bias.grad.item())
    assert grads["sample"][0] == pytest.approx(grads["batch"][0] * math.sqrt(8), rel=1e-5)
    assert grads["sample"][1] == pytest.approx(grads["batch"][1], rel=1e-6)  # dL/dbeta carries no g


# ---------------------------------------------------------------- optimizer groups, determinism


def test_adapter_parameters_get_their_own_group():
    model = quantize_model(build_model("digits"), "asq", 3)
    config = TrainConfig(model="digits", scheme="asq", bits=3, out="unused", adapter_lr_scale=10.0,
                         adapter_weight_decay=0.0)
    other, adapter = parameter_groups(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(".adapter." in names[id(p)] for p in adapter["params"]) and len(adapter["params"]) == 8
    assert not any(".adapter." in names[id(p)] for p in other["params"])
    assert (adapter["lr_scale"], adapter["weight_decay"]) == (10.0, 0.0)
    assert (other["lr_scale"], other["weight_decay"]) == (1.0, 1e-4)
    assert len(parameter_groups(quantize_model(build_model("digits"), "lsq", 3), config)) == 1
    with pytest.raises(UserError, match="adapter-lr-scale"):
        TrainConfig(model="digits", scheme="asq", bits=3, out="x", adapter_lr_scale=0.0).resolved()


def test_training_is_deterministic_and_the_settings_change_it(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = {"model": "digits", "epochs": 1, "seed": 3, "data": "digits-vary"}
        run_training(TrainConfig(scheme="fp", bits=None, out=tmp_path / "fp", **common))
        init = str(tmp_path / "fp" / CHECKPOINT_NAME)
        states = []
        probe = AdapterProbe()  # run b is observed: the probe must not change it
        for name, settings in (("a", {}), ("b", {}), ("c", {"adapter_lr_scale": 10.0, "step_grad_scale": "sample"})):
            model, _ = run_training(TrainConfig(scheme="asq", bits=2, out=tmp_path / name, init=init, **common,
                                                **settings), probe=probe if name == "b" else None)
            states.append(model.state_dict())
    finally:
        torch.set_num_threads(threads)
    same, changed = states[0], states[2]
    assert same.keys() == states[1].keys()
    assert all(torch.equal(same[k], states[1][k]) for k in same)
    assert not torch.equal(same["conv2.act_quant.adapter.2.weight"], changed["conv2.act_quant.adapter.2.weight"])
    [record] = probe.epochs
    assert set(record["layers"]) == {"conv2", "conv3"}
    for entry in record["layers"].values():
        assert entry["grad_norm"] > entry["first_grad_norm"] > 0 and entry["first_moved"] > 0
        assert 1 <= entry["distinct"] <= 360 and 0 < entry["live_hidden"] <= 1
    assert probe.betas["conv2"].shape == (360,)


def test_beta_stats_by_hand():
    stats = beta_stats(np.array([1.0, 1.0004, 1.1, 0.9]))
    # codes at 1/1024: 1024, 1024 (1.0004 rounds there), 1126, 922
    assert stats["distinct"] == 3
    assert stats["median"] == pytest.approx(1.0002)
    assert stats["spread"] == pytest.approx(0.2 / 1.0002)


def test_cli_passes_the_data_variant_and_adapter_settings(tmp_path):
    parser = argparse.ArgumentParser()
    quant.cli.add_train_arguments(parser)
    config = quant.cli._train_config(parser.parse_args(["--bits", "2", "--data", "digits-vary",
                                                        "--adapter-lr-scale", "10", "--step-grad-scale", "sample"]))
    assert (config.data, config.adapter_lr_scale, config.step_grad_scale) == ("digits-vary", 10.0, "sample")
    defaults = quant.cli._train_config(parser.parse_args(["--bits", "2"]))
    assert defaults.adapter_init == TrainConfig(model="digits", scheme="asq", bits=2, out="x").adapter_init
    # eval reads the test split of the variant the checkpoint was trained on
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = run_training(TrainConfig(model="digits", scheme="fp", bits=None, out=tmp_path / "fp", epochs=1,
                                            data="digits-vary"))
    finally:
        torch.set_num_threads(threads)
    eval_parser = argparse.ArgumentParser()
    quant.cli.add_eval_arguments(eval_parser)
    result = quant.cli.float_eval(eval_parser.parse_args([str(tmp_path / "fp" / CHECKPOINT_NAME), "--device", "cpu"]))
    _, _, x_vary, y_vary = digits_vary_split()
    with torch.no_grad():
        expected = 100.0 * (model.eval()(x_vary).argmax(1) == y_vary).double().mean().item()
    assert result["top1"] == pytest.approx(expected)


def test_report_blocks_replace_only_their_own_text(tmp_path):
    from studies.asq_adapt import replace_block

    page = tmp_path / "page.md"
    page.write_text("# Title\n\nhand-written\n")
    replace_block(page, "study", "first")
    replace_block(page, "other", "kept")
    replace_block(page, "study", "second")
    text = page.read_text()
    assert text.startswith("# Title\n\nhand-written\n")
    assert "<!-- study:begin -->\nsecond\n<!-- study:end -->" in text and "first" not in text
    assert "<!-- other:begin -->\nkept\n<!-- other:end -->" in text
