"""Quantizers as ``nn.Module``s with explicit state (docs/design.md section 1).

Activation quantizers (one per quantized layer's input):

- ``LSQActivation``: one learnable step ``s`` per layer (LSQ, Esser et al. 2019).
- ``FixedStepActivation``: a fixed step, not learned (a network's lossless input coding).
- ``ASQActivation``: ``s`` times a per-sample ``beta`` from a small adapter (the paper's ASQ).
- ``MinMaxActivation``: plain uniform min-max, no learned state (a reference, not a scheme).

Weight quantizers (one per quantized layer's weight, per output channel):

- ``LSQWeight``: uniform signed b-bit codes with a learnable step per output channel.
- ``MaxScaleWeight``: uniform signed b-bit codes, step ``max|w_c| / Q_P`` per output channel,
  recomputed from the weight (not learned): the 8-bit edge layers' weights use their whole range.
- ``PowerWeight``: POT or POST levels times a learnable ``alpha`` per output channel.

State the exporter reads (fixed by the team contract): ``.step``, ``.bits``, ``.signed`` and, for ASQ,
``.adapter``; ``.alpha``, ``.bits``, ``.kind`` for POT/POST; ``.codes(weight)`` on both weight
quantizers. State is initialised in place from the first tensor seen (``initialized`` buffer), so a
parameter keeps its identity and the optimizer can be built after the first batch.
"""

import math

import torch
from torch import nn

from asqhw.errors import UserError
from golden import formats
from golden.arith import post_k
from quant.ste import fake_quantize, grad_scale, nearest_level, quantize_codes

MIN_BITS, MAX_BITS = formats.MIN_BITS, formats.MAX_BITS
# Smallest step / alpha / beta: keeps every division finite (the adapter's 1e-8 is the paper's).
STEP_EPS = torch.finfo(torch.float32).eps
BETA_FLOOR = 1e-8
# The adapter's last Linear starts with weight N(0, ADAPTER_INIT_STD) and bias 1: beta ~ 1, so ASQ
# starts as LSQ (docs/design.md 1.2).
ADAPTER_INIT_STD = 0.01
# ``adapter_init="shrunk"`` scales that weight down after the first batch until every sample's beta is
# within this of 1; ``"paper"`` keeps N(0, 0.01).
BETA_INIT_TOLERANCE = 2e-3
ADAPTER_INITS = ("paper", "shrunk")
# What N in the activation step's gradient scale g = 1 / sqrt(Q_P N) counts: the elements of one
# sample (C*H*W, LSQ's "features of the layer") or of the whole batch (B*C*H*W).
STEP_GRAD_SCALES = ("sample", "batch")
# Defaults, as measured in docs/asq-adaptation.md: per sample, the 8x larger step update gains nothing
# (and made 2-bit training diverge on some seeds before the input coding was made lossless); the
# shrink rarely acts on narrow adapters and changes nothing measurable there.
DEFAULT_ADAPTER_INIT = "shrunk"
DEFAULT_STEP_GRAD_SCALE = "batch"
# Activation step initialisations: "lsq" (2 mean|x| / sqrt(Q_P), LSQ's) or "percentile" (this
# percentile of |x| / Q_P: the codes span the range; for the 8-bit last layer, where LSQ's init
# leaves the top half of the 256 codes unused).
ACTIVATION_INITS = ("lsq", "percentile")
CALIBRATION_PERCENTILE = 99.9


def check_bits(bits) -> int:
    """Return ``bits`` if it is an offered width (:data:`golden.formats.INT_BITS`), else raise
    :class:`golden.formats.WidthError`."""
    return formats.check_bits(bits, "bit width ")


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Return ``(Q_N, Q_P)``: ``(-2^(b-1), 2^(b-1) - 1)`` signed, ``(0, 2^b - 1)`` unsigned."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def level_magnitude(kind: str, k: int) -> float:
    """``2^(-k)`` (POT) or ``2^(-k/2)`` (POST) as the correctly rounded float64."""
    if kind == "pot":
        return math.ldexp(1.0, -k)
    return math.ldexp(math.sqrt(0.5) if k % 2 else 1.0, -(k // 2))


def levels(kind: str, bits: int) -> torch.Tensor:
    """Return the exact normalised level set of a b-bit POT or POST weight, sorted, float64.

    A b-bit code is a sign bit and a (b-1)-bit magnitude ``m`` (``m = 0`` is zero), so there are
    ``K + 1 = 2^(b-1) - 1`` non-zero magnitudes ``2^(-k)`` (POT) or ``2^(-k/2)`` (POST),
    ``k = 0 .. K`` (docs/design.md 1.3). 2-bit POST is ternary ``{-1, 0, 1}``.
    """
    bits = check_bits(bits)
    if kind not in formats.POWER_KINDS:
        raise UserError(f"level-set kind {kind!r} is unknown: use 'pot' or 'post'")
    top = post_k(bits)
    mags = torch.tensor([level_magnitude(kind, k) for k in range(top, -1, -1)], dtype=torch.float64)
    return torch.cat([-mags.flip(0), torch.zeros(1, dtype=torch.float64), mags])


class _LazyInit(nn.Module):
    """State initialised from the first tensor seen, tracked by the ``initialized`` buffer.

    The buffer travels with ``state_dict``; a Python flag mirrors it so that the forward pass does
    not read a (possibly GPU) tensor on every call.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False

    def initialize(self, t: torch.Tensor) -> None:
        raise NotImplementedError

    def _ensure_initialized(self, t: torch.Tensor) -> None:
        if not self._ready:
            if not bool(self.initialized):
                self.initialize(t)
            self._ready = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._ready = False  # re-read the loaded buffer on the next forward
        super()._load_from_state_dict(*args, **kwargs)


class _ActivationQuantizer(_LazyInit):
    """Shared state of the learned-step activation quantizers: ``step``, ``bits``, ``signed``.

    ``init``: how the step starts from the first batch (``ACTIVATION_INITS``).
    """

    def __init__(self, bits: int, signed: bool, init: str = "lsq"):
        super().__init__()
        if init not in ACTIVATION_INITS:
            raise UserError(f"activation step init {init!r} is unknown: use one of {', '.join(ACTIVATION_INITS)}")
        self.bits = check_bits(bits)
        self.signed = bool(signed)
        self.init = init
        self.q_n, self.q_p = int_range(self.bits, self.signed)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.step_grad_scale = DEFAULT_STEP_GRAD_SCALE  # a training choice: not in the state_dict

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Step init from the first batch, in place: LSQ's ``s = 2 mean|x| / sqrt(Q_P)``, or with
        ``init="percentile"`` ``s = P(|x|) / Q_P`` (``CALIBRATION_PERCENTILE``)."""
        if self.init == "percentile":
            top = torch.quantile(x.detach().abs().flatten().double(), CALIBRATION_PERCENTILE / 100).float()
            step = top / self.q_p
        else:
            step = 2 * x.abs().mean() / math.sqrt(self.q_p)
        self.step.copy_(step.clamp_min(STEP_EPS))
        self.initialized.fill_(True)

    def _scaled_step(self, x: torch.Tensor) -> torch.Tensor:
        """The step with LSQ's gradient scale ``1 / sqrt(Q_P N)``; N per ``step_grad_scale``."""
        self._ensure_initialized(x)
        return grad_scale(self.step.clamp_min(STEP_EPS), activation_grad_scale(self.q_p, x, self.step_grad_scale))


def activation_grad_scale(q_p: int, x: torch.Tensor, counts: str) -> float:
    """LSQ's ``g = 1 / sqrt(Q_P N)`` for an activation ``x`` shaped ``(B, ...)``.

    ``counts="sample"``: N is one sample's element count (``C*H*W``), so g does not depend on the
    batch size; ``"batch"``: N is ``x.numel()`` (``B*C*H*W``), a ``sqrt(B)`` smaller step update.
    """
    if counts not in STEP_GRAD_SCALES:
        raise UserError(f"step gradient scale {counts!r} is unknown: use one of {', '.join(STEP_GRAD_SCALES)}")
    n = x.numel() if counts == "batch" else x[0].numel()
    return 1.0 / math.sqrt(q_p * n)


class LSQActivation(_ActivationQuantizer):
    """LSQ activation quantizer: one learnable step per layer.

    ``x_hat = clamp(floor(x / s + 0.5), Q_N, Q_P) * s``; unsigned (``0 .. 2^b - 1``) after a ReLU,
    signed for the first layer's image input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self._scaled_step(x), self.q_n, self.q_p)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (int64), the hardware's activation encoding."""
        return quantize_codes(x, self.step, self.q_n, self.q_p).long()


class FixedStepActivation(nn.Module):
    """A fixed-step activation quantizer: ``codes = clamp(floor(x / step + 0.5), Q_N, Q_P)``.

    For a network input whose values are known (pixels): with a step on which every input value
    is exactly a code, no two values share one, and the step cannot learn to merge them. The step
    is a constant of the network (not in the ``state_dict``); no gradient reaches it.
    """

    def __init__(self, bits: int, signed: bool, step: float):
        super().__init__()
        self.bits = check_bits(bits)
        self.signed = bool(signed)
        self.q_n, self.q_p = int_range(self.bits, self.signed)
        if not step > 0:
            raise UserError(f"a fixed activation step must be positive, got {step}")
        self.register_buffer("step", torch.tensor(float(step)), persistent=False)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, step={float(self.step):g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.step, self.q_n, self.q_p)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (int64)."""
        return quantize_codes(x, self.step, self.q_n, self.q_p).long()


def make_adapter(channels: int) -> nn.Sequential:
    """ASQ's adapter: Linear(C, C//4) -> ReLU -> Linear(C//4, 1) -> ReLU; one Linear if C < 8.

    The last Linear starts with weight ``N(0, 0.01)`` and bias 1 so that ``beta ~ 1``.
    """
    if channels < 1:
        raise UserError(f"an ASQ adapter needs at least one input channel, got {channels}")
    if channels >= 8:
        adapter = nn.Sequential(nn.Linear(channels, channels // 4), nn.ReLU(), nn.Linear(channels // 4, 1), nn.ReLU())
    else:
        adapter = nn.Sequential(nn.Linear(channels, 1), nn.ReLU())
    last = adapter[-2]
    nn.init.normal_(last.weight, mean=0.0, std=ADAPTER_INIT_STD)
    nn.init.constant_(last.bias, 1.0)
    return adapter


class ASQActivation(_ActivationQuantizer):
    """ASQ: adaptive step ``s_a = s * beta`` with a per-sample ``beta`` from ``adapter``.

    ``z = GAP(x)`` per sample and channel (``z = x`` for a Linear layer's 2-D input), ``beta =
    max(adapter(z), 1e-8)``, and ``x_hat = clamp(floor(x / s_a + 0.5), Q_N, Q_P) * s_a``. Gradients
    (paper eqs. 7-9): ``dL/ds = g sum_b beta_b G_b``, ``dL/dbeta_b = s G_b`` with ``G_b`` the sample's
    LSQ step gradient; ``beta`` then back-propagates through the adapter (to its weights and ``x``).
    """

    def __init__(self, bits: int, channels: int, signed: bool = False):
        super().__init__(bits, signed)
        self.channels = int(channels)
        self.adapter = make_adapter(self.channels)
        self.adapter_init = DEFAULT_ADAPTER_INIT  # a training choice: not in the state_dict

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, channels={self.channels}"

    def beta(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample ``beta`` of shape ``(B,)`` (differentiable)."""
        z = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        return self.adapter(z).clamp_min(BETA_FLOOR).reshape(x.shape[0])

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """LSQ step init; with ``adapter_init="shrunk"`` also shrink the adapter's random part.

        ``"paper"`` keeps the last Linear's ``N(0, 0.01)`` weight and bias 1. ``"shrunk"`` scales
        that weight down until every sample of this first batch is within ``BETA_INIT_TOLERANCE``
        of 1; the gradient reaching the first Linear is proportional to that weight, so shrinking it
        also slows the first layer's learning (docs/asq-adaptation.md measures the difference).
        """
        if self.adapter_init not in ADAPTER_INITS:
            raise UserError(f"adapter init {self.adapter_init!r} is unknown: use one of {', '.join(ADAPTER_INITS)}")
        super().initialize(x)
        if self.adapter_init != "shrunk":
            return
        deviation = (self.beta(x) - 1).abs().max().item()
        if deviation > BETA_INIT_TOLERANCE:
            self.adapter[-2].weight.mul_(BETA_INIT_TOLERANCE / deviation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self._scaled_step(x)
        beta = self.beta(x).reshape((-1,) + (1,) * (x.dim() - 1))
        return fake_quantize(x, step * beta, self.q_n, self.q_p)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` with each sample's adaptive step (int64)."""
        s_a = self.step * self.beta(x).reshape((-1,) + (1,) * (x.dim() - 1))
        return quantize_codes(x, s_a, self.q_n, self.q_p).long()


class MinMaxActivation(nn.Module):
    """Plain uniform min-max quantizer (reference): ``step = max|x| / Q_P`` per call, no learning.

    Straight-through for ``x``; the step carries no gradient.
    """

    def __init__(self, bits: int, signed: bool):
        super().__init__()
        self.bits = check_bits(bits)
        self.signed = bool(signed)
        self.q_n, self.q_p = int_range(self.bits, self.signed)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x.detach().abs().max() if self.signed else x.detach().clamp_min(0).max()
        return fake_quantize(x, (top / self.q_p).clamp_min(STEP_EPS), self.q_n, self.q_p)


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(C_out,)`` tensor to broadcast over a weight shaped ``(C_out, ...)``."""
    return t.reshape((-1,) + (1,) * (like.dim() - 1))


class LSQWeight(_LazyInit):
    """LSQ weight quantizer: signed b-bit codes, one learnable step per output channel.

    ``codes = clamp(floor(w / step + 0.5), -2^(b-1), 2^(b-1) - 1)``; gradient scale on ``step`` is
    ``1 / sqrt(Q_P * fan_in)``, fan_in = ``C_in/groups * k * k`` (the elements sharing one step).
    """

    kind = formats.INT

    def __init__(self, bits: int, out_channels: int):
        super().__init__()
        self.bits = check_bits(bits)
        self.q_n, self.q_p = int_range(self.bits, signed=True)
        self.step = nn.Parameter(torch.ones(int(out_channels)))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, out_channels={self.step.numel()}"

    @torch.no_grad()
    def initialize(self, weight: torch.Tensor) -> None:
        """Per-channel ``step = 2 mean|w_c| / sqrt(Q_P)``, in place."""
        mean_abs = weight.abs().reshape(weight.shape[0], -1).mean(dim=1)
        self.step.copy_((2 * mean_abs / math.sqrt(self.q_p)).clamp_min(STEP_EPS))
        self.initialized.fill_(True)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self._ensure_initialized(weight)
        fan_in = weight[0].numel()
        step = grad_scale(self.step.clamp_min(STEP_EPS), 1.0 / math.sqrt(self.q_p * fan_in))
        return fake_quantize(weight, _per_channel(step, weight), self.q_n, self.q_p)

    @torch.no_grad()
    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Signed integer codes (int64); the memory word is their b-bit two's complement."""
        return quantize_codes(weight, _per_channel(self.step, weight), self.q_n, self.q_p).long()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """The float weights ``codes * step`` that the forward pass uses."""
        return codes.to(self.step.dtype) * _per_channel(self.step, codes)


class MaxScaleWeight(nn.Module):
    """Signed b-bit weight codes with the per-channel step ``max|w_c| / Q_P``, not learned.

    Every channel's largest weight sits on the top code, so the codes use the whole range. The
    step follows the weight: it is recomputed from it by every forward and by :meth:`codes` (and
    kept in the ``step`` buffer, which the exporter reads after :meth:`codes`). The gradient is
    straight through for the weight (nothing is clipped). Used for the 8-bit edge layers: a learned
    step started there (``max|w_c| / 127``, seven times below LSQ's init) is small next to its own
    noisy gradient and can be driven through zero, which kills the channel.
    """

    kind = formats.INT

    def __init__(self, bits: int, out_channels: int):
        super().__init__()
        self.bits = check_bits(bits)
        self.q_n, self.q_p = int_range(self.bits, signed=True)
        self.register_buffer("step", torch.ones(int(out_channels)))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, out_channels={self.step.numel()}"

    @torch.no_grad()
    def initialize(self, weight: torch.Tensor) -> None:
        """``step = max|w_c| / Q_P`` per channel, in place."""
        top = weight.detach().abs().reshape(weight.shape[0], -1).max(dim=1).values
        self.step.copy_((top / self.q_p).clamp_min(STEP_EPS))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self.initialize(weight)
        return fake_quantize(weight, _per_channel(self.step, weight), self.q_n, self.q_p)

    @torch.no_grad()
    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Signed integer codes (int64) of ``weight``, with its own step."""
        self.initialize(weight)
        return quantize_codes(weight, _per_channel(self.step, weight), self.q_n, self.q_p).long()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """The float weights ``codes * step`` that the forward pass uses."""
        return codes.to(self.step.dtype) * _per_channel(self.step, codes)


class PowerWeight(_LazyInit):
    """POT / POST weight quantizer: nearest level of ``clamp(w / alpha, -1, 1)``, times ``alpha``.

    ``alpha`` is learned per output channel, initialised at the 99th percentile of ``|w_c|``. The
    gradient is straight through for ``w`` inside the clip range and LSQ-style for ``alpha``
    (``level - w/alpha`` inside, ``+-1`` outside) with gradient scale ``1 / sqrt(fan_in)``.
    Hardware codes are b-bit sign-magnitude: sign bit ``b-1``, magnitude ``m`` (0 = zero, else
    exponent ``e = m - 1``, value ``alpha * 2^(e - K)`` POT or ``alpha * 2^((e - K)/2)`` POST).
    """

    def __init__(self, bits: int, out_channels: int, kind: str):
        super().__init__()
        self.bits = check_bits(bits)
        self.kind = kind
        level_set = levels(kind, self.bits).float()
        self.top_exponent = post_k(self.bits)  # K
        self.register_buffer("levels", level_set, persistent=False)
        self.register_buffer("midpoints", (level_set[1:] + level_set[:-1]) / 2, persistent=False)
        self.alpha = nn.Parameter(torch.ones(int(out_channels)))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, out_channels={self.alpha.numel()}"

    @torch.no_grad()
    def initialize(self, weight: torch.Tensor) -> None:
        """Per-channel ``alpha`` = 99th percentile of ``|w_c|``, in place."""
        flat = weight.abs().reshape(weight.shape[0], -1)
        self.alpha.copy_(torch.quantile(flat, 0.99, dim=1).clamp_min(STEP_EPS))
        self.initialized.fill_(True)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self._ensure_initialized(weight)
        alpha = grad_scale(self.alpha.clamp_min(STEP_EPS), 1.0 / math.sqrt(weight[0].numel()))
        alpha = _per_channel(alpha, weight)
        return nearest_level((weight / alpha).clamp(-1, 1), self.levels, self.midpoints) * alpha

    def _level_index(self, weight: torch.Tensor) -> torch.Tensor:
        v = (weight / _per_channel(self.alpha, weight)).clamp(-1, 1)
        return torch.bucketize(v, self.midpoints, right=True)

    @torch.no_grad()
    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Sign-magnitude codes ``sign << (b-1) | m`` as int64 in ``0 .. 2^b - 1``; zero is 0."""
        limit = formats.MAX_WEIGHT_BITS[self.kind]
        if self.bits not in formats.OFFERED_BITS[self.kind]:
            raise formats.WidthError(
                f"{self.kind.upper()} weights at {self.bits} bits have no hardware encoding (shifts up to "
                f"{self.top_exponent}); use at most {limit} bits, or uniform (LSQ) weights for wider layers"
            )
        offset = self._level_index(weight) - (self.top_exponent + 1)  # -(K+1) .. K+1, 0 is zero
        sign = (offset < 0).long()
        return (sign << (self.bits - 1)) | offset.abs()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """The float weights the forward pass uses, from ``codes``."""
        magnitude = codes & ((1 << (self.bits - 1)) - 1)
        sign = 1 - 2 * ((codes >> (self.bits - 1)) & 1)
        table = [0.0] + [level_magnitude(self.kind, k) for k in range(self.top_exponent, -1, -1)]
        value = torch.tensor(table, dtype=torch.float64)[magnitude] * sign
        return value.to(self.alpha.dtype) * _per_channel(self.alpha, codes)
