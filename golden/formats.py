"""Every width, name and layout the stages agree on, in one place (docs/arithmetic.md, section 2).

- *Offered widths*: the bit widths each weight encoding exists at. POT and POST codes have
  exponents ``0 .. 2^(b-1) - 2``, so their shifters grow as ``2^(b-1)``: POST is offered up to 5
  bits, POT up to 4; uniform integer weights and activation codes go from 2 to 8 bits.
- *Weight kinds*: ``"int"`` (uniform two's complement codes: the LSQ weights), ``"pot"`` and
  ``"post"`` (sign-magnitude power-of-two / power-of-sqrt(2) codes). ``"int"`` is the one name of
  uniform weights in the bundle, the quantizers and the hardware.
- *Bundle widths*: the fixed widths the exporter builds the integer model with (requant
  multiplier, ``y``, the ASQ adapter's constants, beta, the reciprocal, the logits' fraction).
- *Output beat*: the accelerator's result stream, one beat per logit then one for the class.

This module imports nothing but the standard library and :mod:`asqhw.errors`, so every stage
(training, golden model, hardware, simulation) can use it.
"""

from __future__ import annotations

from asqhw.errors import UserError

# ----------------------------------------------------------------------------- weight kinds

#: Uniform weights: signed two's complement codes, one step per output channel (LSQ).
INT = "int"
#: Power-of-two weights: sign-magnitude codes, ``alpha * 2^(e - K)``.
POT = "pot"
#: Power-of-sqrt(2) weights: sign-magnitude codes, ``alpha * 2^((e - K) / 2)``.
POST = "post"
#: Weight encodings the golden model and the hardware understand.
WEIGHT_KINDS = (INT, POT, POST)
#: The non-uniform encodings (sign-magnitude codes of exponents).
POWER_KINDS = (POT, POST)

# ----------------------------------------------------------------------------- schemes, networks

#: Quantization schemes: name -> (activation quantizer of the BITS-bit layers, their weight kind).
#: The training side (:mod:`quant.schemes`) and the bundle reader share these names.
SCHEMES = {
    "lsq": ("lsq", INT),
    "asq": ("asq", INT),
    "lsq+pot": ("lsq", POT),
    "lsq+post": ("lsq", POST),
    "asq+post": ("asq", POST),
}
#: Every scheme a bundle can describe: each activation quantizer with each weight kind, named
#: ``"<act>"`` for uniform weights and ``"<act>+<kind>"`` otherwise (the hardware builds all of them;
#: training offers :data:`SCHEMES`, a subset with the same meanings).
BUNDLE_SCHEMES = {(act if kind == INT else f"{act}+{kind}"): (act, kind)
                  for act in ("lsq", "asq") for kind in WEIGHT_KINDS}
#: Networks a bundle can be of (the exporter's registry, ``quant.export.networks.NETWORKS``, has
#: exactly these names; a test keeps the two equal).
NETWORK_NAMES = ("digits", "digits-vary", "resnet20-digits32")

# ----------------------------------------------------------------------------- offered widths

#: BITS the arithmetic is defined for (uniform weights and activation codes).
INT_BITS = range(2, 9)
#: Widths at which POST weights are offered (shifts up to 7 at 5 bits).
POST_BITS = range(2, 6)
#: Widths at which POT weights are offered (shifts up to 6 at 4 bits).
POT_BITS = range(2, 5)
#: Offered widths of each weight kind.
OFFERED_BITS = {INT: INT_BITS, POT: POT_BITS, POST: POST_BITS}
MIN_BITS = INT_BITS[0]
MAX_BITS = INT_BITS[-1]
#: Widest weights of each kind (what a multiplier of that kind is built up to).
MAX_WEIGHT_BITS = {kind: bits[-1] for kind, bits in OFFERED_BITS.items()}

#: F, fractional bits of the POST odd-exponent table ``T[a] = round(a * sqrt(2) * 2**F)``, that the
#: primitives use when none is given; a bundle records its own (``post_frac_bits``).
DEFAULT_POST_FRAC_BITS = 2
#: Largest F the exporter accepts (products stay far below 63 bits).
MAX_POST_FRAC_BITS = 16


class WidthError(UserError, ValueError):
    """A bit width (or weight kind) that is not offered; the message names what is.

    A :class:`~asqhw.errors.UserError` (the command line reports it as a user mistake) and a
    ``ValueError`` (what a wrong argument to a primitive is).
    """


def range_text(bits: range) -> str:
    """``"2-8"``: the inclusive ends of an offered range."""
    return f"{bits[0]}-{bits[-1]}"


def offered_text() -> str:
    """``"int: 2-8, post: 2-5, pot: 2-4"``: every kind's offered widths."""
    return ", ".join(f"{kind}: {range_text(OFFERED_BITS[kind])}" for kind in (INT, POST, POT))


def check_bits(bits, label: str = "BITS=") -> int:
    """Return ``bits`` if it is an integer in :data:`INT_BITS`, else raise :class:`WidthError`.

    ``label`` precedes the value in the message (``"BITS="`` gives ``BITS=9 is outside 2-8``,
    ``"bit width "`` gives ``bit width 9 is outside 2-8``).
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in INT_BITS:
        raise WidthError(f"{label}{bits!r} is outside {range_text(INT_BITS)}; pick a bit width between "
                         f"{MIN_BITS} and {MAX_BITS}")
    return bits


def check_weight_format(kind: str, bits: int) -> None:
    """Raise :class:`WidthError` unless ``kind`` weights are offered at ``bits``."""
    if kind not in OFFERED_BITS:
        raise WidthError(f"weight kind {kind!r} unknown; use one of {WEIGHT_KINDS}")
    if bits not in OFFERED_BITS[kind]:
        raise WidthError(f"{kind} weights are not offered at {bits} bits ({offered_text()})")


def default_post_frac_bits(bits: int) -> int:
    """The first F ``asqhw export`` tries for a BITS-bit model unless ``--post-frac-bits`` says otherwise.

    The trade-off (docs/arithmetic.md 2.2, measured at BITS 3 and 4): F sets the width of every POST
    product, so of the adder trees and accumulators (a few LUT4 per MAC per bit of F on the iCE40
    and ECP5, docs/results.md), while the table's rounding moves an accumulator by up to
    ``2^((e-1)/2) / 2`` LSB per odd product, an error whose weight in the next layer's code halves
    with every bit of F. The exporter takes, for each checkpoint, the smallest F from this one up for
    which the teacher-forced bound E of section 6 (with the actual table error ``|acc - acc*|`` of each
    input) stays below one code, i.e. given the same input no golden code moves by more than one from
    the float model's, and stops with the figures when none does. The shipped digits checkpoints get
    F = 3 at BITS 3 (E = 1.06 at F = 2) and F = 2 at BITS 4 (docs/results.md).
    BITS = 2 has no odd exponent (K = 0): the table is never read and F would only append zero
    bits, so it is 0. BITS = 5 (no shipped model) takes the same 2.
    """
    if int(bits) == 2:
        return 0
    return DEFAULT_POST_FRAC_BITS


# ----------------------------------------------------------------------------- bundle widths

#: Requant multiplier ``M``, signed.
M_BITS = 16
#: ``y``, the post-ReLU activation a requantizer hands an ASQ unit, unsigned.
Y_BITS = 16
Y_MAX = (1 << Y_BITS) - 1
#: Nominal width of the adapter's hidden ``h`` (its worst case is recorded per layer).
H_BITS = 16
#: Adapter weights, signed, one power-of-two scale per tensor.
ADAPTER_W_BITS = 12
#: ``s_code``, the ASQ step as an unsigned integer over ``2^FS``.
STEP_BITS = 12
#: ``G``, fractional bits of the beta code.
BETA_FRAC = 10
#: Width of the beta code: beta < 16.
BETA_BITS = 14
BETA_MAX = (1 << BETA_BITS) - 1
#: ``beta_min = 2^(G - BETA_MIN_SHIFT)``: beta >= 1/16.
BETA_MIN_SHIFT = 4
#: Significant bits of the reciprocal ``r`` at beta = 1 (it has 16-17).
RECIP_BITS = 16
#: ``FL``, fractional bits of the logits.
LOGIT_FRAC = 8

# ----------------------------------------------------------------------------- output beat

#: Width of a beat's signed value (a logit, or the class index in the last beat).
OUT_WIDTH = 32
#: Bit of the ``last`` flag in a beat's word (just above the value).
OUT_LAST_BIT = OUT_WIDTH
#: Bits and bytes of one beat on the wire (value, then ``last``; little-endian bytes).
OUT_BEAT_BITS = OUT_WIDTH + 1
OUT_BEAT_BYTES = -(-OUT_BEAT_BITS // 8)


def decode_out_beat(word: int) -> tuple[int, bool]:
    """One output beat as an unsigned word -> ``(signed value, last)``."""
    value = word & ((1 << OUT_WIDTH) - 1)
    value -= (value >> (OUT_WIDTH - 1)) << OUT_WIDTH
    return value, bool((word >> OUT_LAST_BIT) & 1)
