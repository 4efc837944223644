"""From a model bundle and generator parameters to a hardware plan (checked before anything is built).

The plan decides, per layer of the manifest, which engine runs it and how its loops, buffers and
ROMs are laid out:

- the *main engine* (PE x SIMD lanes of the chosen multiplier ``MUL`` at ``BITS``) runs the middle
  layers (not the first, not the last) whose weights are ``MUL`` at ``BITS`` bits and whose input
  codes are unsigned ``BITS``-bit;
- the *wide engine* (PE x 1 uniform multipliers, 8-bit weights times 9-bit signed activations, so
  it takes conv1's signed int8 codes and fc's unsigned 8-bit codes alike) runs the rest: the 8-bit
  first and last layers. It computes PE output channels per cycle, one input at a time, and pads
  the output channels to a multiple of PE (fc: 10 -> 12 with PE = 4; the padded channels have zero
  weights and are never written).

Errors (``asqhw.errors.UserError``, raised before anything is built or written): BITS outside 2..8,
a bundle of other BITS, an unknown MUL, a MUL the bundle's weights were not trained for, POST/POT
above their offered widths, PE or SIMD not a power of two or not dividing the main engine's
output / input channels.
"""

from dataclasses import dataclass, field

from asqhw.errors import UserError
from golden import arith
from golden.formats import INT, WidthError, check_bits
from golden.formats import MAX_WEIGHT_BITS as MAX_MUL_BITS
from hw.rtl.mul import MUL_KINDS
from hw.rtl.requant import RequantSpec

#: Default generator parameters (docs/hardware.md, "Defaults": fits an iCE40 UP5K).
DEFAULT_PE = 4
DEFAULT_SIMD = 4
WIDE_ACT_BITS = 9  # signed: holds int8 (-128..127) and uint8 (0..255) codes
WIDE_W_BITS = 8
#: DSP blocks of the smallest device the accelerator is built for (the iCE40 UP5K's 8 SB_MAC16):
#: the wide engine takes the ones the requantizer and the ASQ unit leave.
DSP_BLOCKS = 8


@dataclass
class LayerPlan:
    """One layer as the hardware runs it (fc is a 1x1 convolution over a 1x1 map)."""

    index: int
    name: str
    kind: str
    engine: str  # "main" | "wide"
    c_in: int
    h_in: int
    w_in: int
    c_out: int
    h_out: int
    w_out: int
    kernel: int
    stride: int
    pad: int
    act_bits: int
    act_signed: bool
    w_kind: str
    w_bits: int
    weights: object  # int64 array (c_out, c_in, k, k): signed for int, raw codes for pot/post
    acc_width: int
    requant: RequantSpec  # g_max: the input's largest beta code (1 without ASQ)
    output: str  # "codes" | "y" | "logits"
    asq_in: object = None  # golden.arith.AsqConstants of this layer's input, or None
    pe: int = 1
    simd: int = 1

    @property
    def groups(self) -> int:
        return -(-self.c_out // self.pe)

    @property
    def chunks(self) -> int:
        return self.c_in // self.simd

    @property
    def group_items(self) -> int:
        return self.kernel * self.kernel * self.chunks

    @property
    def items(self) -> int:
        return self.h_out * self.w_out * self.groups * self.group_items

    @property
    def in_pixels(self) -> int:
        return self.h_in * self.w_in

    @property
    def out_pixels(self) -> int:
        return self.h_out * self.w_out


@dataclass
class NetPlan:
    bits: int
    mul: str
    pe: int
    simd: int
    frac_bits: int
    layers: list = field(default_factory=list)
    manifest: object = None  # the bundle's golden.bundle.Manifest

    def engine_layers(self, engine):
        return [layer for layer in self.layers if layer.engine == engine]

    @property
    def input_codes(self) -> int:
        first = self.layers[0]
        return first.c_in * first.in_pixels

    @property
    def n_logits(self) -> int:
        return self.layers[-1].c_out


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check_params(bits, pe, simd, mul) -> None:
    """Refuse generator parameters that no bundle could satisfy."""
    check_bits(bits, "BITS=")
    if mul is not None and mul not in MUL_KINDS:
        raise UserError(f"MUL={mul!r} is unknown; use one of {', '.join(MUL_KINDS)}")
    if mul is not None and bits > MAX_MUL_BITS[mul]:
        raise WidthError(f"MUL={mul} is offered up to {MAX_MUL_BITS[mul]} bits, not BITS={bits} "
                        f"(its shifts grow as 2^(BITS-1)); use MUL=int")
    for name, value in (("PE", pe), ("SIMD", simd)):
        if not isinstance(value, int) or not _is_pow2(value):
            raise UserError(f"{name}={value} must be a power of two (1, 2, 4, ...)")


def _shape3(shape):
    shape = list(shape)
    return (shape[0], 1, 1) if len(shape) == 1 else tuple(shape)


def make_plan(bundle, *, bits=None, pe=DEFAULT_PE, simd=DEFAULT_SIMD, mul=None) -> NetPlan:
    """Check the parameters against the bundle and lay the network out on the two engines.

    Parameters
    ----------
    bundle : golden.bundle.Bundle
    bits : int or None
        Expected BITS (None: the bundle's).
    pe, simd : int
        Main engine parallelism (powers of two dividing its layers' output / input channels).
    mul : str or None
        Main engine multiplier (None: the one the bundle's middle layers were trained for).
    """
    man = bundle.manifest
    bundle_bits = man.bits
    where = f"bundle {bundle.path}" if bundle.path else "bundle"
    check_params(bundle_bits if bits is None else bits, pe, simd, mul)
    if bits is not None and bits != bundle_bits:
        raise UserError(f"BITS={bits} but {where} was trained with bits={bundle_bits}; pass "
                        f"BITS={bundle_bits} or MODEL=models/digits-b{bits}")
    bits = bundle_bits
    # The first and last layers are the 8-bit ones (docs/design.md 1.1): always on the wide engine.
    middle = [la for la in man.layers[1:-1] if la.weight.bits == bits
              and not la.act_in.signed and la.act_in.bits == bits]
    kinds = sorted({la.weight.kind for la in middle})
    if len(kinds) > 1:
        raise UserError(f"{where} mixes weight formats {kinds} at {bits} bits; one MUL per design")
    trained = kinds[0] if kinds else "int"
    if mul is None:
        mul = trained
    check_params(bits, pe, simd, mul)
    if kinds and mul != trained:
        raise UserError(f"MUL={mul} but the {bits}-bit layers of {where} have {trained} weights; "
                        f"use MUL={trained} or a bundle trained with the {mul} scheme")
    plan = NetPlan(bits=bits, mul=mul, pe=pe, simd=simd, frac_bits=man.post_frac_bits, manifest=man)
    layers = man.layers
    for i, la in enumerate(layers):
        plan.layers.append(_layer_plan(bundle, i, la, layers, middle, pe, simd))
    if plan.layers[0].asq_in is not None:
        raise UserError(f"{where}: the first layer's input is ASQ-quantized; the accelerator takes "
                        "fixed input codes (first layers are LSQ 8-bit)")
    return plan


def _layer_plan(bundle, i, la, layers, middle, pe, simd):
    name = la.name
    c_in, h_in, w_in = _shape3(la.in_shape)
    c_out, h_out, w_out = _shape3(la.out_shape)
    conv = la.is_conv
    engine = "main" if la in middle else "wide"
    act, w, req = la.act_in, la.weight, la.requant
    if engine == "wide":
        if w.kind != INT or w.bits > WIDE_W_BITS or act.bits > 8:
            raise UserError(f"layer {name}: {w.kind} {w.bits}-bit weights with {act.bits}-bit "
                            "inputs fit neither the main nor the 8-bit engine")
        lane_simd = 1
    else:
        lane_simd = simd
        if c_out % pe:
            raise UserError(f"PE={pe} does not divide the {c_out} output channels of layer {name}; "
                            "pick a PE that divides every middle layer's output channels")
        if c_in % simd:
            raise UserError(f"SIMD={simd} does not divide the {c_in} input channels of layer {name}; "
                            "pick a SIMD that divides every middle layer's input channels")
    weights = bundle.weights[name]
    weights = weights.reshape(weights.shape + (1, 1)) if not conv else weights
    output = req.output
    if output == "logits" and i != len(layers) - 1:
        raise UserError(f"layer {name} yields logits but is not the last layer")
    asq_in = act.asq_constants()
    requant = RequantSpec(M=req.M, B=req.B, S=req.S, G=req.G, lo=req.lo, hi=req.hi,
                          g_max=asq_in.beta_max if asq_in is not None else 1)
    return LayerPlan(
        index=i, name=name, kind=la.kind, engine=engine, c_in=c_in, h_in=h_in if conv else 1,
        w_in=w_in if conv else 1, c_out=c_out, h_out=h_out if conv else 1, w_out=w_out if conv else 1,
        kernel=la.kernel if conv else 1, stride=la.stride if conv else 1,
        pad=la.pad if conv else 0, act_bits=act.bits, act_signed=act.signed,
        w_kind=w.kind, w_bits=w.bits, weights=weights, acc_width=la.acc_width,
        requant=requant, output=output, asq_in=asq_in, pe=pe, simd=lane_simd,
    )


def check_acc_width(layer: LayerPlan, frac_bits: int) -> None:
    """The bundle's accumulator width must hold the layer's proved worst case."""
    if layer.act_signed:
        lo, hi = -(1 << (layer.act_bits - 1)), (1 << (layer.act_bits - 1)) - 1
    else:
        lo, hi = 0, (1 << layer.act_bits) - 1
    pmin, pmax = arith.product_range(lo, hi, layer.w_kind, layer.w_bits, frac_bits)
    need = arith.acc_width(layer.c_in * layer.kernel ** 2, pmin, pmax)
    if layer.acc_width < need:
        raise UserError(f"layer {layer.name}: acc_width {layer.acc_width} in the bundle is below the "
                        f"proved {need}; re-export the bundle")
