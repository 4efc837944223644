"""Quantizers: level sets, codes, rounding and the gradients of paper eqs. 7-9, against hand values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asqhw.errors import UserError
from quant.quantizers import (
    ASQActivation,
    LSQActivation,
    LSQWeight,
    MinMaxActivation,
    PowerWeight,
    levels,
    make_adapter,
)

R2 = math.sqrt(0.5)


# ---------------------------------------------------------------- level sets (docs/design.md 1.3)

HAND_LEVELS = {
    ("post", 2): [-1, 0, 1],
    ("pot", 2): [-1, 0, 1],
    ("post", 3): [-1, -R2, -0.5, 0, 0.5, R2, 1],
    ("pot", 3): [-1, -0.5, -0.25, 0, 0.25, 0.5, 1],
    ("post", 4): [-1, -R2, -0.5, -R2 / 2, -0.25, -R2 / 4, -0.125, 0, 0.125, R2 / 4, 0.25, R2 / 2, 0.5, R2, 1],
    ("pot", 4): [-1, -1 / 2, -1 / 4, -1 / 8, -1 / 16, -1 / 32, -1 / 64, 0,
                 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1],
}


@pytest.mark.parametrize(("kind", "bits"), sorted(HAND_LEVELS))
def test_levels_match_hand_written_sets(kind, bits):
    assert levels(kind, bits).tolist() == HAND_LEVELS[kind, bits]


@pytest.mark.parametrize("kind", ["pot", "post"])
def test_levels_at_8_bits_are_b_bit_honest(kind):
    got = levels(kind, 8)
    # 2^7 - 1 = 127 non-zero magnitudes each sign, plus zero: 255 levels, all codable in 8 bits.
    assert got.numel() == 255
    positive = got[got > 0]
    assert positive.max().item() == 1.0
    smallest = 2.0**-126 if kind == "pot" else 2.0**-63
    assert positive.min().item() == smallest
    assert torch.equal(got[:127], -positive.flip(0))
    assert got[127].item() == 0.0
    ratio = 2.0 if kind == "pot" else math.sqrt(2.0)
    assert torch.allclose(positive[1:] / positive[:-1], torch.full((126,), ratio, dtype=torch.float64), rtol=1e-14)


def test_levels_reject_bad_requests():
    with pytest.raises(UserError, match="'apot'"):
        levels("apot", 3)
    with pytest.raises(UserError, match="9"):
        levels("post", 9)
    with pytest.raises(UserError, match="1"):
        levels("pot", 1)


# ---------------------------------------------------------------- rounding and LSQ


def test_rounding_is_half_up_not_half_even():
    q = LSQActivation(8, signed=True)
    q.initialize(torch.ones(1))
    with torch.no_grad():
        q.step.fill_(1.0)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    # floor(x + 0.5): ties go up; torch.round would give 0, 2, 2, -0, -2, -2.
    assert q(x).tolist() == [1.0, 2.0, 3.0, 0.0, -1.0, -2.0]
    assert q.codes(x).tolist() == [1, 2, 3, 0, -1, -2]


def test_lsq_activation_step_init_and_gradients_by_hand():
    q = LSQActivation(2, signed=False)  # Q_N = 0, Q_P = 3
    x = torch.tensor([0.3, 0.74, 2.0, -0.2], requires_grad=True)
    q.initialize(x.detach())
    # s = 2 mean|x| / sqrt(Q_P) = 2 * 3.24 / 4 / sqrt(3)
    assert q.step.item() == pytest.approx(2 * 0.81 / math.sqrt(3), rel=1e-6)
    with torch.no_grad():
        q.step.fill_(0.5)
    out = q(x)
    # u = x / s = 0.6, 1.48, 4.0 (above Q_P), -0.4 (below Q_N)
    assert out.tolist() == pytest.approx([0.5, 0.5, 1.5, 0.0])
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 0.0, 0.0]
    # dL/ds = g * (1*(1-0.6) + 2*(1-1.48) + 3*Q_P + 4*Q_N), g = 1 / sqrt(Q_P * N)
    assert q.step.grad.item() == pytest.approx(8.44 / math.sqrt(3 * 4), rel=1e-5)


def test_lsq_weight_per_channel_init_codes_and_gradient():
    w = torch.tensor([[0.1, -0.3, 0.05, 0.2], [1.0, -2.0, 0.5, 0.25]], requires_grad=True)
    q = LSQWeight(3, 2)  # signed 3-bit: -4..3
    q.initialize(w.detach())
    assert q.step.tolist() == pytest.approx([2 * 0.1625 / math.sqrt(3), 2 * 0.9375 / math.sqrt(3)], rel=1e-6)
    with torch.no_grad():
        q.step.copy_(torch.tensor([0.1, 0.5]))
    # channel 0: u = 1, -3, 0.5 -> 1 (half up), 2; channel 1: u = 2, -4, 1, 0.5 -> 1
    assert q.codes(w).tolist() == [[1, -3, 1, 2], [2, -4, 1, 1]]
    out = q(w)
    assert torch.allclose(out, q.dequantize(q.codes(w)))
    out.sum().backward()
    # d/ds per channel: sum(round(u) - u) inside, g = 1 / sqrt(Q_P * 4)
    g = 1 / math.sqrt(3 * 4)
    assert q.step.grad.tolist() == pytest.approx([g * (0 + 0 + 0.5 + 0), g * (0 + 0 + 0 + 0.5)], rel=1e-5)
    assert w.grad.tolist() == [[1.0] * 4, [1.0] * 4]


# ---------------------------------------------------------------- ASQ (paper eqs. 7-9)


def test_asq_gradients_match_eqs_7_to_9_by_hand():
    q = ASQActivation(2, channels=2)  # unsigned 2-bit: Q_P = 3
    x = torch.tensor([[[[0.3, 2.0]], [[0.0, 0.0]]], [[[1.3, -0.5]], [[0.0, 0.0]]]], requires_grad=True)
    q.initialize(x.detach())
    with torch.no_grad():
        q.step.fill_(0.5)
    beta = torch.tensor([1.0, 2.0], requires_grad=True)
    q.beta = lambda _x: beta  # isolate eqs. 8-9 from the adapter
    out = q(x)
    # sample 1: s_a = 0.5, u = 0.6, 4 (above); sample 2: s_a = 1, u = 1.3, -0.5 (below)
    assert out[:, 0].reshape(4).tolist() == pytest.approx([0.5, 1.5, 1.0, 0.0])
    upstream = torch.zeros_like(x)
    upstream[:, 0] = torch.tensor([[[1.0, 1.0]], [[2.0, 5.0]]])
    (out * upstream).sum().backward()
    # G_1 = (1 - 0.6) + 3 = 3.4;  G_2 = 2 * (1 - 1.3) + 5 * 0 = -0.6
    g = 1 / math.sqrt(3 * x.numel())
    assert q.step.grad.item() == pytest.approx(g * (1.0 * 3.4 + 2.0 * -0.6), rel=1e-5)  # eq. 8
    assert beta.grad.tolist() == pytest.approx([0.5 * 3.4, 0.5 * -0.6], rel=1e-5)  # eq. 9, no g
    assert x.grad[:, 0].reshape(2, 2).tolist() == [[1.0, 0.0], [2.0, 0.0]]  # eq. 7 (STE)


def test_asq_adapter_receives_dl_dbeta():
    q = ASQActivation(4, channels=3)  # C < 8: one Linear(3, 1) + ReLU
    assert [type(m).__name__ for m in q.adapter] == ["Linear", "ReLU"]
    x = torch.rand(4, 3, 2, 2) + 0.1
    q.initialize(x)
    out = q(x)
    upstream = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    (out * upstream).sum().backward()
    # Independent float64 recomputation of s * sum_b G_b, which is dL/d(bias) when every beta > 0.
    s = q.step.detach().double()
    with torch.no_grad():
        beta = q.adapter(x.mean(dim=(2, 3))).double().reshape(-1, 1, 1, 1)
    u = x.double() / (s * beta)
    d_step = torch.where((u >= 0) & (u <= 15), torch.floor(u + 0.5) - u, torch.where(u < 0, 0.0, 15.0))
    expected = (s * (upstream.double() * d_step).sum()).item()
    assert q.adapter[0].bias.grad.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_adapter_shapes_follow_the_contract():
    assert [type(m).__name__ for m in make_adapter(16)] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert make_adapter(16)[0].out_features == 4 and make_adapter(16)[2].in_features == 4
    assert make_adapter(7)[0].in_features == 7 and len(make_adapter(7)) == 2
    last = make_adapter(64)[2]
    assert last.bias.item() == 1.0 and last.weight.std().item() < 0.02


def test_asq_initial_beta_is_one_within_one_percent_on_wide_layers():
    torch.manual_seed(0)
    q = ASQActivation(4, channels=512)
    x = torch.relu(torch.randn(32, 512, 4, 4) * 3)
    q.initialize(x[:16])
    beta = q.beta(x)  # half of it not seen at init
    assert (beta - 1).abs().max().item() <= 0.01


# ---------------------------------------------------------------- POT / POST weights


def test_post_codes_hand_encoding_3_bits():
    q = PowerWeight(3, 1, "post")
    q.initialize(torch.ones(1, 4))
    assert q.alpha.item() == 1.0
    w = torch.tensor([[0.7, -0.5, 0.1, 2.0, -0.75, 0.6036, 0.6035, -1.0]])
    # K = 2: m = e + 1, e = K - k, value 2^((e - K)/2); sign bit is bit 2.
    # 0.7 -> 2^-1/2 (m=2); -0.5 -> m=1, negative; 0.1 -> 0; 2.0 -> clipped to 1 (m=3); -0.75 -> m=2, neg;
    # 0.6036 is just above the 0.5 / 0.7071 midpoint (0.60355) -> m=2, 0.6035 below -> m=1.
    assert q.codes(w).tolist() == [[2, 0b101, 0, 3, 0b110, 2, 1, 0b111]]
    assert q(w)[0].tolist() == pytest.approx([R2, -0.5, 0.0, 1.0, -R2, R2, 0.5, -1.0])


def test_pot_codes_hand_encoding_4_bits_and_alpha_init():
    w = torch.linspace(-1, 1, 201).reshape(1, -1) * 4
    q = PowerWeight(4, 1, "pot")
    q.initialize(w)
    assert q.alpha.item() == pytest.approx(torch.quantile(w.abs(), 0.99).item())
    with torch.no_grad():
        q.alpha.fill_(2.0)
    v = torch.tensor([[2.0, 1.0, 0.25, -0.03125, 0.0]])
    # K = 6: w/alpha = 1 (e=6, m=7), 0.5 (m=6), 0.125 (m=4), -1/64 (e=0, m=1, sign 8), 0.
    assert q.codes(v).tolist() == [[7, 6, 4, 8 | 1, 0]]


def test_power_weight_gradients():
    q = PowerWeight(3, 1, "post")
    q.initialize(torch.ones(1, 4))
    w = torch.tensor([[0.6, 1.5, -2.0, 0.2]], requires_grad=True)
    q(w).sum().backward()
    # inside: d/dw = 1; outside 0. d/dalpha: level - w/alpha inside, sign outside; g = 1/sqrt(4).
    assert w.grad.tolist() == [[1.0, 0.0, 0.0, 1.0]]
    expected = (0.5 - 0.6) + 1.0 + -1.0 + (0.0 - 0.2)
    assert q.alpha.grad.item() == pytest.approx(expected / math.sqrt(4), rel=1e-5)


def test_power_codes_refused_beyond_hardware_widths():
    w = torch.randn(2, 9)
    with pytest.raises(UserError, match="POST weights at 6 bits"):
        PowerWeight(6, 2, "post").codes(w)
    with pytest.raises(UserError, match="POT weights at 5 bits"):
        PowerWeight(5, 2, "pot").codes(w)
    assert PowerWeight(5, 2, "post").codes(w).max().item() < 32


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["pot", "post"]),
    bits=st.integers(2, 4),
    values=st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=20),
    alpha=st.floats(0.05, 2.0),
)
def test_power_codes_decode_to_the_forward_values(kind, bits, values, alpha):
    q = PowerWeight(bits, 1, kind)
    q.initialize(torch.ones(1, 1))
    with torch.no_grad():
        q.alpha.fill_(alpha)
    w = torch.tensor([values])
    codes = q.codes(w)
    assert codes.min().item() >= 0 and codes.max().item() < 2**bits
    assert torch.allclose(q.dequantize(codes), q(w), rtol=1e-6, atol=1e-7)
    # nearest level: no level of the set is closer to clamp(w / alpha) than the chosen one.
    v = (w.double() / alpha).clamp(-1, 1)
    chosen = (q(w).double() / alpha - v).abs()
    best = (levels(kind, bits).reshape(-1, 1) - v.reshape(1, -1)).abs().min(dim=0).values
    assert torch.all(chosen.reshape(-1) <= best + 1e-6)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 8),
    signed=st.booleans(),
    values=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=1, max_size=30),
    step=st.floats(0.01, 5.0),
)
def test_lsq_output_is_on_the_grid_and_in_range(bits, signed, values, step):
    q = LSQActivation(bits, signed)
    q.initialize(torch.ones(1))
    with torch.no_grad():
        q.step.fill_(step)
    x = torch.tensor(values)
    codes = q.codes(x)
    q_n, q_p = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    assert codes.min().item() >= q_n and codes.max().item() <= q_p
    assert torch.equal(q(x), codes.float() * q.step.detach())  # the exporter's codes are the forward's
    inside = (x.double() / q.step.item() >= q_n - 0.5) & (x.double() / q.step.item() < q_p + 0.5)
    assert torch.all((q(x) - x).abs()[inside] <= step / 2 * (1 + 1e-5))


def test_minmax_reference_quantizer():
    q = MinMaxActivation(2, signed=True)  # -2..1, step = max|x| / 1
    x = torch.tensor([-0.8, 0.3, 0.5, 0.2], requires_grad=True)
    out = q(x)
    assert out.tolist() == pytest.approx([-0.8, 0.0, 0.8, 0.0])
    out.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_bad_bit_widths_are_user_errors():
    for bad in (1, 9, 3.0, True):
        with pytest.raises(UserError, match="bit width"):
            LSQActivation(bad, signed=False)


@pytest.mark.parametrize("step_shape", [(), (1,), (4, 1, 1, 1), (1, 3, 1, 1), (3, 1, 1, 1)])
def test_fake_quantize_equals_the_autograd_formula(step_shape):
    # Reference built from differentiable primitives: clamp, then round with a straight-through
    # estimator, then scale: its autograd gradients are LSQ's (docs/design.md 1.1).
    from quant.ste import fake_quantize

    torch.manual_seed(0)
    batch = 3 if step_shape[:1] == (3,) else 4
    x = (torch.randn(batch, 3, 5, 5) * 3).requires_grad_()
    step = (torch.rand(step_shape) + 0.5).requires_grad_()
    upstream = torch.randn(batch, 3, 5, 5)
    (fake_quantize(x, step, -4, 3) * upstream).sum().backward()
    got = x.grad.clone(), step.grad.clone()
    x.grad = step.grad = None
    u = (x / step).clamp(-4, 3)
    ((u + (torch.floor(u + 0.5) - u).detach()) * step * upstream).sum().backward()
    assert torch.allclose(got[0], x.grad, rtol=1e-6, atol=0)
    assert torch.allclose(got[1], step.grad, rtol=1e-5, atol=1e-5)


def test_asq_forward_is_exactly_codes_times_adaptive_step():
    torch.manual_seed(1)
    q = ASQActivation(3, channels=16)
    x = torch.relu(torch.randn(8, 16, 4, 4))
    q.initialize(x)
    with torch.no_grad():
        q.adapter[2].weight.normal_(0, 0.5)  # make beta differ clearly between samples
        beta = q.beta(x)
        expected = q.codes(x).float() * (q.step * beta).reshape(-1, 1, 1, 1)
    assert beta.max() - beta.min() > 0.05
    assert torch.equal(q(x).detach(), expected)
