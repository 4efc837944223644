"""Integer primitives of the hardware's arithmetic: the specification the RTL must equal bit for bit.

Every function here takes and returns integers (Python ``int`` or NumPy ``int64`` arrays); no float
ever touches the data path. ``docs/arithmetic.md`` states the same rules in words, with the widths
and their proofs; a change of semantics here must be written at the top of that document.

One rounding rule is used everywhere: round half up, written as a right shift,
``rshift_round(x, n) = (x + 2**(n-1)) >> n`` (``>>`` is the floor shift of two's complement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from golden.formats import DEFAULT_POST_FRAC_BITS, INT, POST, POT, WEIGHT_KINDS, check_weight_format


def _as_int(x):
    """Return ``x`` as a Python int or an integer NumPy array (refusing floats)."""
    if isinstance(x, (int, np.integer)):
        return int(x)
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu" and arr.dtype != object:
        raise TypeError(f"integer data expected on the data path, got dtype {arr.dtype}")
    return arr.astype(np.int64) if arr.dtype.kind in "iu" else arr


def rshift_round(x, n: int):
    """Divide by ``2**n`` and round half up: ``(x + 2**(n-1)) >> n``; ``n = 0`` returns ``x``.

    Parameters
    ----------
    x : int or integer array
        Signed value(s).
    n : int
        Shift, ``n >= 0``.

    Returns
    -------
    int or int64 array
        ``floor(x / 2**n + 1/2)`` exactly.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"rshift_round: shift must be >= 0, got {n}")
    x = _as_int(x)
    if n == 0:
        return x
    return (x + (1 << (n - 1))) >> n


def clamp(x, lo, hi):
    """Saturate ``x`` to ``[lo, hi]`` (either bound may be ``None``)."""
    x = _as_int(x)
    if isinstance(x, int):
        if lo is not None:
            x = max(x, lo)
        if hi is not None:
            x = min(x, hi)
        return x
    if lo is not None or hi is not None:
        x = np.clip(x, lo, hi)
    return x


def signed_width(lo: int, hi: int) -> int:
    """Smallest two's complement width holding every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def unsigned_width(hi: int) -> int:
    """Smallest unsigned width holding ``0 .. hi`` (at least 1)."""
    return max(1, int(hi).bit_length())


# ----------------------------------------------------------------------------- weight codes


def post_k(bits: int) -> int:
    """Largest exponent ``K = 2**(bits-1) - 2`` of a b-bit POT/POST code (always even)."""
    return (1 << (bits - 1)) - 2


def decode_signmag(wcode, bits: int):
    """Split a b-bit sign-magnitude POT/POST code into ``(negative, m)``.

    Bit ``bits-1`` is the sign (1 = negative); the low ``bits-1`` bits are the magnitude code ``m``;
    ``m = 0`` is the weight zero, ``m >= 1`` means exponent ``e = m - 1`` in ``0..K``.
    """
    wcode = _as_int(wcode)
    if np.any(np.asarray(wcode) < 0) or np.any(np.asarray(wcode) >= (1 << bits)):
        raise ValueError(f"sign-magnitude code outside 0..{(1 << bits) - 1}")
    neg = (wcode >> (bits - 1)) & 1
    m = wcode & ((1 << (bits - 1)) - 1)
    return neg, m


def int_to_raw(w, bits: int):
    """Two's complement signed code -> raw unsigned b-bit word (what a ``.mem`` file holds)."""
    return _as_int(w) & ((1 << bits) - 1)


def raw_to_int(raw, bits: int):
    """Raw unsigned b-bit word -> signed two's complement value."""
    raw = _as_int(raw)
    return raw - ((raw >> (bits - 1)) & 1) * (1 << bits)


# ----------------------------------------------------------------------------- products


@cache
def sqrt2_fixed(a: int, frac_bits: int) -> int:
    """``round_half_up(a * sqrt(2) * 2**F)`` computed exactly with ``math.isqrt``.

    With ``n = 2 * a**2 * 4**F``, ``floor(sqrt(n) + 1/2) = (isqrt(4n) + 1) // 2``; ``sqrt(n)`` is
    irrational for ``a != 0`` so there is never a tie.
    """
    if a < 0:
        raise ValueError(f"sqrt2_fixed: activation code must be >= 0, got {a}")
    n = 2 * a * a * (1 << (2 * frac_bits))
    return (math.isqrt(4 * n) + 1) // 2


def post_table(act_bits: int, frac_bits: int = DEFAULT_POST_FRAC_BITS) -> np.ndarray:
    """The odd-exponent ROM: ``T[a] = round(a * sqrt(2) * 2**F)`` for ``a = 0 .. 2**act_bits - 1``.

    One table per activation lane, shared by the PEs of the lane. Entry width:
    ``unsigned_width(T[-1])``, i.e. ``act_bits + F + 1`` bits.
    """
    return np.array([sqrt2_fixed(a, frac_bits) for a in range(1 << act_bits)], dtype=np.int64)


def post_product(a, wcode, bits: int, frac_bits: int = DEFAULT_POST_FRAC_BITS):
    """Signed POST product ``a * w`` in units of ``alpha_c * 2**(-K/2) * 2**(-F)``.

    Magnitude for exponent ``e = m - 1``, on ``|a|``: even ``e``: ``(|a| << (e//2)) << F``; odd ``e``:
    ``T[|a|] << ((e-1)//2)`` with ``T`` from :func:`post_table`; ``m = 0``: 0. Then negated when
    exactly one of the weight's sign bit and ``a < 0`` holds. Exact real value: ``a * 2**(e/2) * 2**F``;
    the error is that of ``T[|a|]`` (at most 1/2) times ``2**((e-1)//2)``. Since ``a sqrt2 2^F`` is
    never a tie, ``T[|a|]`` negated is ``round(a sqrt2 2^F)`` for a negative ``a`` too: signed codes
    follow the same rounding rule.

    Parameters
    ----------
    a : int or integer array
        Activation codes, unsigned or two's complement (a linear bottleneck's signed codes).
    wcode : int or integer array
        b-bit sign-magnitude POST codes (broadcast against ``a``).
    bits : int
        Weight width b (POST offered for 2..5).
    frac_bits : int
        F, fractional bits of the table.
    """
    check_weight_format(POST, bits)
    a = np.asarray(_as_int(a), dtype=np.int64)
    neg, m = decode_signmag(wcode, bits)
    a_arr, neg, m = np.broadcast_arrays(a, np.asarray(neg), np.asarray(m))
    mag_a = np.abs(a_arr)
    e = np.maximum(m - 1, 0)
    table = _table_for(mag_a, frac_bits)
    even = (mag_a << (e >> 1)) << frac_bits
    odd = table[mag_a] << ((e - 1).clip(min=0) >> 1)
    mag = np.where(m == 0, 0, np.where(e & 1, odd, even))
    out = np.where((neg == 1) != (a_arr < 0), -mag, mag).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def _table_for(a: np.ndarray, frac_bits: int) -> np.ndarray:
    top = int(a.max()) if a.size else 0
    return post_table(max(1, top.bit_length()), frac_bits)


def pot_product(a, wcode, bits: int):
    """Signed POT product ``a * w`` in units of ``alpha_c * 2**(-K)``: ``+-(a << e)``, 0 for m=0
    (``a`` unsigned or two's complement: the shift is exact either way)."""
    check_weight_format(POT, bits)
    a = np.asarray(_as_int(a), dtype=np.int64)
    neg, m = decode_signmag(wcode, bits)
    a, neg, m = np.broadcast_arrays(a, np.asarray(neg), np.asarray(m))
    mag = np.where(m == 0, 0, a << np.maximum(m - 1, 0))
    out = np.where(neg == 1, -mag, mag).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def int_product(a, w):
    """Uniform product ``a * w`` of a (signed or unsigned) activation code and a signed weight."""
    out = np.asarray(_as_int(a), dtype=np.int64) * np.asarray(_as_int(w), dtype=np.int64)
    return int(out) if out.ndim == 0 else out


def product(a, wcode, kind: str, bits: int, frac_bits: int = DEFAULT_POST_FRAC_BITS):
    """Dispatch to :func:`int_product` / :func:`pot_product` / :func:`post_product` by ``kind``.

    ``wcode`` is the signed value for ``int`` and the raw sign-magnitude code for ``pot``/``post``.
    """
    if kind == INT:
        return int_product(a, wcode)
    if kind == POT:
        return pot_product(a, wcode, bits)
    if kind == POST:
        return post_product(a, wcode, bits, frac_bits)
    raise ValueError(f"weight kind {kind!r} unknown; use one of {WEIGHT_KINDS}")


def weight_unit_exponent(kind: str, bits: int, frac_bits: int = DEFAULT_POST_FRAC_BITS) -> int:
    """``u`` such that one product LSB is ``scale_c * 2**(-u)`` (``scale_c`` = step or alpha).

    int: 0; POT: K; POST: K/2 + F.
    """
    if kind == INT:
        return 0
    if kind == POT:
        return post_k(bits)
    if kind == POST:
        return post_k(bits) // 2 + frac_bits
    raise ValueError(f"weight kind {kind!r} unknown; use one of {WEIGHT_KINDS}")


def product_range(act_lo: int, act_hi: int, kind: str, bits: int,
                  frac_bits: int = DEFAULT_POST_FRAC_BITS) -> tuple[int, int]:
    """Exact ``(min, max)`` of one product over every activation code and every weight code.

    Computed exhaustively (at most 256 x 256 pairs), so it is the true range, not a bound. Signed
    activation ranges are allowed for every kind (POT/POST: the sign of ``a`` times the magnitude's).
    """
    acts = np.arange(act_lo, act_hi + 1, dtype=np.int64)
    if kind == INT:
        ws = np.arange(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int64)
    else:
        ws = np.arange(0, 1 << bits, dtype=np.int64)
    p = product(acts[:, None], ws[None, :], kind, bits, frac_bits)
    return int(p.min()), int(p.max())


def acc_width(fan_in: int, product_min: int, product_max: int) -> int:
    """Accumulator width: smallest two's complement width for ``[n*pmin, n*pmax]``, ``n = fan_in``.

    Proof: every term lies in ``[pmin, pmax]``, so a sum of at most ``n`` terms (padding adds
    zeros, and ``pmin <= 0 <= pmax``) lies in ``[n*pmin, n*pmax]``; both ends are reached when every
    code is at its extreme, so the width is also necessary. It never exceeds the product width plus
    ``ceil(log2(n))`` guard bits.
    """
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    return signed_width(fan_in * min(product_min, 0), fan_in * max(product_max, 0))


# ----------------------------------------------------------------------------- requantization


def requantize(acc, M, B, S: int, *, g=1, G: int = 0, lo=None, hi=None):
    """Per-channel fixed-point scale, bias, rounding and saturation of an accumulator.

    ``t = acc * M * g + (B << G)``; ``out = clamp(rshift_round(t, S + G), lo, hi)``.

    - next quantizer LSQ: ``lo, hi = 0, Q_P`` (the clamp at 0 is the ReLU) -> activation codes;
    - next quantizer ASQ: ``lo, hi = 0, Y_MAX`` -> ``y``, the real activation with ``FY``
      fractional bits, for the ASQ unit;
    - last layer: no clamp -> logits with ``FL`` fractional bits.

    Parameters
    ----------
    acc : integer array
        Accumulators; the caller shapes ``M``, ``B`` (per channel) and ``g`` (per sample) so that
        they broadcast against it.
    M, B : integer arrays
        Multiplier and bias per output channel (signed).
    S : int
        Shift, ``S >= 0``.
    g : int or integer array
        The layer input's ASQ beta code (``G`` fractional bits); 1 when the input was LSQ.
    G : int
        Fractional bits of ``g``; 0 when the input was LSQ.
    """
    acc = np.asarray(_as_int(acc), dtype=np.int64)
    t = acc * np.asarray(M, dtype=np.int64) * np.asarray(g, dtype=np.int64) + (
        np.asarray(B, dtype=np.int64) << G
    )
    return clamp(rshift_round(t, S + G), lo, hi)


def reciprocal(q, R: int):
    """``round_half_up(2**R / q)`` as the divider computes it: ``(2**R + (q >> 1)) // q``.

    Exact round half up for every ``q >= 1`` (for odd ``q`` no tie exists).
    """
    q = _as_int(q)
    if np.any(np.asarray(q) < 1):
        raise ValueError("reciprocal: divisor must be >= 1")
    return ((1 << R) + (q >> 1)) // q


@dataclass(frozen=True)
class AsqConstants:
    """Fixed-point constants of one ASQ adapter unit (see docs/arithmetic.md, "ASQ unit").

    Attributes
    ----------
    W1, b1 : int64 arrays or None
        First Linear ``(C/4, C)`` with ``1/(H*W)`` folded in, and its bias; ``None`` when ``C < 8``.
    S1 : int
        Shift from the first sum to ``h`` (``FH`` fractional bits).
    W2 : int64 array
        Last Linear as a vector: ``(C/4,)`` for ``C >= 8`` or ``(C,)`` for ``C < 8``.
    b2 : int
        Its bias.
    S2 : int
        Shift from the last sum to ``beta`` (``G`` fractional bits).
    G : int
        Fractional bits of ``beta``.
    beta_min, beta_max : int
        Saturation of the beta code (``beta_min`` >= 1 is the float model's ``1e-8`` floor).
    s_code, FS : int
        The layer's step ``s`` as ``s_code / 2**FS``.
    R : int
        Reciprocal scale: ``r = round(2**R / (s_code * beta))``.
    FY : int
        Fractional bits of the incoming ``y``.
    qmax : int
        ``Q_P = 2**bits - 1`` of the activation codes produced.
    """

    W1: np.ndarray | None
    b1: np.ndarray | None
    S1: int
    W2: np.ndarray
    b2: int
    S2: int
    G: int
    beta_min: int
    beta_max: int
    s_code: int
    FS: int
    R: int
    FY: int
    qmax: int

    @property
    def code_shift(self) -> int:
        """Shift of ``y * r`` to an activation code: ``FY + R - FS - G``."""
        return self.FY + self.R - self.FS - self.G


def asq_beta(y, p: AsqConstants):
    """Adapter of the ASQ unit: the beta code (``G`` fractional bits) of each sample.

    ``z_c = sum_{h,w} y[c,h,w]``; ``C >= 8``: ``h = max(0, rshift_round(W1 z + b1, S1))``,
    ``beta = clamp(rshift_round(W2 . h + b2, S2), beta_min, beta_max)``; ``C < 8``:
    ``beta = clamp(rshift_round(W2 . z + b2, S2), beta_min, beta_max)``.

    Parameters
    ----------
    y : integer array (N, C, H, W) or (N, C)
        Post-ReLU activations with ``FY`` fractional bits.
    """
    y = np.asarray(_as_int(y), dtype=np.int64)
    z = y.reshape(y.shape[0], y.shape[1], -1).sum(axis=2)
    if p.W1 is not None:
        h = np.maximum(0, rshift_round(z @ np.asarray(p.W1, dtype=np.int64).T
                                       + np.asarray(p.b1, dtype=np.int64), p.S1))
    else:
        h = z
    s = h @ np.asarray(p.W2, dtype=np.int64) + int(p.b2)
    return clamp(rshift_round(s, p.S2), p.beta_min, p.beta_max)


def asq_unit(y, p: AsqConstants):
    """The ASQ adapter unit: per sample, beta from the whole map, then codes with step ``s*beta``.

    ``q = s_code * beta``; ``r = reciprocal(q, R)`` (one division per sample);
    ``code = clamp(rshift_round(y * r, FY + R - FS - G), 0, qmax)``.

    Returns
    -------
    codes : int64 array, shape of ``y``
    beta : int64 array (N,)
    """
    y = np.asarray(_as_int(y), dtype=np.int64)
    beta = asq_beta(y, p)
    r = reciprocal(p.s_code * beta, p.R)
    r = r.reshape((-1,) + (1,) * (y.ndim - 1))
    codes = clamp(rshift_round(y * r, p.code_shift), 0, p.qmax)
    return codes, beta
