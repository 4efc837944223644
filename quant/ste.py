"""The straight-through estimators, written once and shared by every quantizer.

Rounding is round half up, ``floor(x + 0.5)``, everywhere (the hardware's ``rshift_round`` rule);
``torch.round`` would round half to even and disagree with the integer model on ties.
"""

import functools
import math

import torch


def quantize_codes(x: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int) -> torch.Tensor:
    """Integer codes ``clamp(floor(x * (1 / step) + 0.5), q_n, q_p)`` (float tensor, no gradient).

    The one formula of every quantizer's codes, shared by the forward pass and ``codes()``.
    """
    return (x * step.reciprocal()).add_(0.5).floor_().clamp_(q_n, q_p)


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * ctx.scale, None


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``x`` unchanged in the forward pass, with its gradient multiplied by ``scale``.

    LSQ's step-size gradient scale ``g``: the value is exactly the step (the exporter reads the
    parameter itself, so the forward pass must not perturb it by a rounding), only the update is damped.
    """
    return _GradScale.apply(x, scale)


class _FakeQuantize(torch.autograd.Function):
    """``x_hat = clamp(floor(x * (1 / step) + 0.5), q_n, q_p) * step`` with LSQ's gradients.

    With ``u = x * (1 / step)`` (docs/design.md 1.1, paper eq. 7):

    - ``d x_hat / d x = 1`` inside ``(q_n, q_p)``, else ``0`` (straight through the rounding);
    - ``d x_hat / d step = floor(u + 0.5) - u`` inside, ``q_n`` below, ``q_p`` above.

    ``step`` broadcasts against ``x`` (a scalar, one value per output channel, or one per sample);
    its gradient is summed over the broadcast dimensions. ``u`` is formed with the reciprocal (a
    multiplication is several times cheaper than a division on CPUs); ``codes`` use the same formula,
    so the codes the exporter reads are exactly the forward pass's.
    """

    @staticmethod
    def forward(ctx, x, step, q_n, q_p):
        codes = quantize_codes(x, step, q_n, q_p)
        inverse = step.reciprocal()
        ctx.save_for_backward(x, inverse, codes)
        ctx.q_n, ctx.q_p = q_n, q_p
        return codes * step

    @staticmethod
    def backward(ctx, grad_out):
        # hardtanh's backward is the straight-through mask (one fused pass, no bool tensors); it keeps
        # min < u < max, so it gets the neighbouring floats of q_n and q_p: the closed [q_n, q_p].
        # The step gradient is split as sum(grad_outside * q) + sum(grad_inside * (q - u)) per group
        # sharing a step: both sums add small or sparse terms, no cancellation between large sums.
        x, inverse, codes = ctx.saved_tensors
        u = x * inverse
        below, above = _open_bounds(ctx.q_n, ctx.q_p, u.dtype)
        grad_x = torch.ops.aten.hardtanh_backward(grad_out, u, below, above)
        grad_step = None
        if ctx.needs_input_grad[1]:
            shape = inverse.shape
            grad_step = _reduce_products(grad_out - grad_x, codes, shape) + _reduce_products(grad_x, codes - u, shape)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_step, None, None


@functools.cache
def _open_bounds(q_n: int, q_p: int, dtype: torch.dtype) -> tuple[float, float]:
    """The floats of ``dtype`` just outside ``q_n`` and ``q_p``: ``lo < u < hi`` iff ``q_n <= u <= q_p``."""
    ends = torch.tensor([q_n, q_p], dtype=dtype)
    outward = torch.tensor([-math.inf, math.inf], dtype=dtype)
    lo, hi = torch.nextafter(ends, outward).tolist()
    return lo, hi


def _reduce_products(a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``sum(a * b)`` over the dimensions along which a tensor of ``shape`` was broadcast.

    The two common cases (one step per tensor; one step per sample or per output channel) are dot
    products over contiguous rows, without a temporary the size of ``a`` (``vecdot`` runs about
    twice as fast as ``bmm`` on these long thin rows).
    """
    if shape.numel() == 1:
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(shape)
    if len(shape) == a.dim() and shape[0] == a.shape[0] and all(n == 1 for n in shape[1:]):
        rows = shape[0]
        return torch.linalg.vecdot(a.reshape(rows, -1), b.reshape(rows, -1)).reshape(shape)
    return _sum_to_shape(a * b, shape)


def _sum_to_shape(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the dimensions along which a tensor of ``shape`` was broadcast."""
    lead = grad.dim() - len(shape)
    if lead:
        grad = grad.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if dims:
        grad = grad.sum(dim=dims, keepdim=True)
    return grad.reshape(shape)


def fake_quantize(x: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int) -> torch.Tensor:
    """Uniform fake quantization with LSQ's straight-through gradients (see ``_FakeQuantize``)."""
    return _FakeQuantize.apply(x, step, q_n, q_p)


class _NearestLevel(torch.autograd.Function):
    """Snap ``v`` (already in [-1, 1]) to the nearest value of a sorted level set.

    Ties go to the larger level (round half up, as everywhere else). The gradient is straight
    through: ``d out / d v = 1``.
    """

    @staticmethod
    def forward(ctx, v, levels, midpoints):
        return levels[torch.bucketize(v, midpoints, right=True)]

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None


def nearest_level(v: torch.Tensor, levels: torch.Tensor, midpoints: torch.Tensor) -> torch.Tensor:
    """Nearest level of ``v`` with a straight-through gradient (see ``_NearestLevel``)."""
    return _NearestLevel.apply(v, levels, midpoints)
