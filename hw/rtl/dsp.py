"""Wide products on registered DSP blocks, so that every path into and out of a block is timed.

nextpnr-ice40 times every SB_MAC16 port as a register port: a block used combinationally (its
clock tied off) splits a path into pieces whose multiply delay is never counted. Yosys' ice40_dsp
pass moves registers into the block only in this form, which this module writes out:

- operands: plain registers (no reset, no enable) whose outputs feed the multiplier and nothing
  that needs a constant bit: every piece multiplies two operands of one signedness, each at most
  16 bits, so no zero-extension bit (a constant, which the pass refuses) reaches a multiplier port;
- the product: one plain register (the block's 8 x 8 and 16 x 16 pipeline registers);
- the output: a register *with an enable* (the block's output register, its hold input driven by
  the enable). A second plain register would instead be taken as the 16 x 16 output pipeline
  register, which Yosys 0.70 absorbs without removing the original flip-flop (the product is lost);
  the enable keeps it on the output register.

Splitting a wide product (``PipelinedProduct``): both operands signed -> signed digits (each
operand written as ``sum d_i 2^(16 i)`` with ``-2^15 <= d_i < 2^15``, from ``X + sum 2^(16 i + 15)``);
both unsigned -> 16-bit unsigned chunks; one signed -> its sign bit flipped (``X_u = X + 2^(w-1)``,
unsigned) and ``U << (w-1)`` subtracted after the pieces. Each piece is a 16 x 16 block; the pieces
(and that correction) are summed in logic in one registered stage.

On ECP5 (no register packing for MULT18X18D) the same registers stay in logic, and nextpnr times
the combinational multipliers with their delays: every path is timed there too.

An operand register whose input is a multiplexer with a constant arm (a zero for padding, "beta or
1") becomes, after Yosys' ``opt_dff``, a flip-flop with a synchronous set or reset, which the
ice40_dsp pass does not move into the block: the block's input is then a logic register and the
block itself untimed. ``input_stage=True`` puts one plain register in logic in front of each operand
(one cycle more), so that the block's operand registers always sample a register.
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: Operand width of one DSP block multiplier (iCE40 SB_MAC16: 16 x 16).
DSP_WIDTH = 16


def _signed_digits(width):
    """``(offset, width)`` of the signed digits of a signed ``width``-bit operand.

    A digit is at most 16 bits; the top one absorbs the carries of the lower ones, so it takes at
    most 15 bits of the operand (its range is ``[-2^(t-1), 2^(t-1)]`` for ``t`` operand bits).
    """
    if width <= DSP_WIDTH:
        return [(0, width)]
    digits, offset = [], 0
    while width - offset > DSP_WIDTH - 1:
        digits.append((offset, DSP_WIDTH))
        offset += DSP_WIDTH
    digits.append((offset, width - offset + 1))
    return digits


def _unsigned_chunks(width):
    return [(o, min(DSP_WIDTH, width - o)) for o in range(0, width, DSP_WIDTH)]


class PipelinedProduct(wiring.Component):
    """``p = a * b`` exactly, on DSP-sized pieces, registered before, inside and after each block.

    Parameters
    ----------
    a_shape, b_shape : Shape
        Operand shapes (signed or unsigned, any width).
    input_stage : bool
        A plain register in logic in front of each operand (see the module notes): the operands
        may come from anything, at :attr:`latency` ``LATENCY + 1``.
    addend_shape : Shape or None
        With a shape: ``p = a * b + (c << addend_shift)``, ``c`` taken with the operands and added
        in the stage that sums the pieces (no extra cycle, one adder there).

    Ports
    -----
    a, b : In
        Operands, sampled every cycle.
    c : In(addend_shape)
        Only with ``addend_shape``: the addend, sampled with the operands.
    valid : In(1)
        Qualifies ``a`` and ``b``; it enables the blocks' output registers (see the module notes:
        it must not be a constant).
    p : Out(signed or unsigned)
        The product of the operands of :attr:`latency` cycles before.
    """

    def __init__(self, a_shape, b_shape, *, input_stage=False, addend_shape=None, addend_shift=0):
        self.a_shape, self.b_shape = a_shape, b_shape
        self.input_stage = input_stage
        self.addend_shape, self.addend_shift = addend_shape, addend_shift
        #: Cycles from the operands (and ``valid``) to their product on ``p``.
        self.latency = self.LATENCY + (1 if input_stage else 0)
        p_shape = self.product_shape(a_shape, b_shape, addend_shape=addend_shape, addend_shift=addend_shift)
        self.signed, self.p_width = p_shape.signed, p_shape.width
        ports = {"a": In(a_shape), "b": In(b_shape), "valid": In(1)}
        if addend_shape is not None:
            ports["c"] = In(addend_shape)
        ports["p"] = Out(p_shape)
        super().__init__(ports)
        self.pieces = self.pieces_for(a_shape, b_shape)

    #: Operand registers, product (pipeline) register, output register, sum of the pieces.
    LATENCY = 4

    @staticmethod
    def _split_for(a_shape, b_shape, shape):
        """``(offset, width)`` of ``shape``'s pieces in the representation the operands choose."""
        if a_shape.signed and b_shape.signed:
            return _signed_digits(shape.width)
        return _unsigned_chunks(shape.width)

    @staticmethod
    def product_shape(a_shape, b_shape, *, addend_shape=None, addend_shift=0):
        """The shape of ``p`` (what the component's port would be), without building the component."""
        is_signed = a_shape.signed or b_shape.signed or (addend_shape is not None and addend_shape.signed)
        width = a_shape.width + b_shape.width
        if addend_shape is not None:
            width = max(width, addend_shape.width + addend_shift) + 1
        return signed(width) if is_signed else unsigned(width)

    @classmethod
    def pieces_for(cls, a_shape, b_shape) -> int:
        """DSP blocks of ``a * b`` (what :attr:`pieces` would be), without building the component."""
        return len(cls._split_for(a_shape, b_shape, a_shape)) * len(cls._split_for(a_shape, b_shape, b_shape))

    def _split(self, shape):
        """``(offset, width)`` of the operand's pieces in the chosen representation."""
        return self._split_for(self.a_shape, self.b_shape, shape)

    def _operand(self, m, value, shape, name):
        """The operand's pieces, each registered: ``(offset, register)`` with ``value = sum reg << offset``
        (minus the correction the caller adds for a flipped sign bit)."""
        both_signed = self.a_shape.signed and self.b_shape.signed
        pieces = []
        if both_signed:
            digits = _signed_digits(shape.width)
            if len(digits) == 1:
                reg = Signal(shape, name=f"{name}_op0", reset_less=True)
                m.d.sync += reg.eq(value)
                return [(0, reg)]
            carry = sum(1 << (o + DSP_WIDTH - 1) for o, _ in digits[:-1])
            z = Signal(signed(shape.width + 2), name=f"{name}_digits")
            m.d.comb += z.eq(value + carry)
            for k, (o, w) in enumerate(digits):
                reg = Signal(signed(w), name=f"{name}_op{k}", reset_less=True)
                bits = z[o:o + w]
                # d_i = (16-bit slice of z) - 2^15: the slice with its top bit flipped, read signed
                m.d.sync += reg.eq((bits ^ (1 << (w - 1)) if k < len(digits) - 1 else bits).as_signed())
                pieces.append((o, reg))
            return pieces
        if shape.signed:  # mixed: X_u = X + 2^(w-1), the sign bit flipped
            value = (value ^ (1 << (shape.width - 1))).as_unsigned()
        for k, (o, w) in enumerate(_unsigned_chunks(shape.width)):
            reg = Signal(unsigned(w), name=f"{name}_op{k}", reset_less=True)
            m.d.sync += reg.eq(value.as_unsigned()[o:o + w])
            pieces.append((o, reg))
        return pieces

    def elaborate(self, platform):
        m = Module()
        a_value, b_value, valid = self.a, self.b, self.valid
        if self.input_stage:
            a_value = Signal(self.a_shape, name="a_in", reset_less=True)
            b_value = Signal(self.b_shape, name="b_in", reset_less=True)
            valid = Signal(name="valid_in")
            m.d.sync += [a_value.eq(self.a), b_value.eq(self.b), valid.eq(self.valid)]
        c_value = None
        if self.addend_shape is not None:
            c_value = self.c
            if self.input_stage:
                c_value = Signal(self.addend_shape, name="c_in", reset_less=True)
                m.d.sync += c_value.eq(self.c)
        a_pieces = self._operand(m, a_value, self.a_shape, "a")
        b_pieces = self._operand(m, b_value, self.b_shape, "b")
        v1, v2 = Signal(), Signal()
        m.d.sync += [v1.eq(valid), v2.eq(v1)]
        outputs = []
        for ao, a in a_pieces:
            for bo, b in b_pieces:
                shape = signed(len(a) + len(b)) if a.shape().signed else unsigned(len(a) + len(b))
                product = Signal(shape, name=f"pp_{ao}_{bo}", reset_less=True)
                out = Signal(shape, name=f"po_{ao}_{bo}", reset_less=True)
                m.d.sync += product.eq(a * b)
                with m.If(v2):  # the enable keeps this on the block's output register
                    m.d.sync += out.eq(product)
                outputs.append((ao + bo, out))
        total = sum(out << offset for offset, out in outputs)
        if self.a_shape.signed != self.b_shape.signed:
            # X_u * U = X * U + U << (w-1): take the unsigned operand's correction off.
            if self.a_shape.signed:
                x_shape, u_shape, u_value = self.a_shape, self.b_shape, b_value
            else:
                x_shape, u_shape, u_value = self.b_shape, self.a_shape, a_value
            # U travels beside the pieces to the sum (operand, product and output stages).
            u_delayed = u_value
            for k in range(1, self.LATENCY):
                u_k = Signal(u_shape, name=f"u{k}", reset_less=True)
                m.d.sync += u_k.eq(u_delayed)
                u_delayed = u_k
            total = total - (u_delayed << (x_shape.width - 1))
        if c_value is not None:
            # c travels beside the pieces to the sum (operand, product and output stages).
            for k in range(1, self.LATENCY):
                c_k = Signal(self.addend_shape, name=f"c{k}", reset_less=True)
                m.d.sync += c_k.eq(c_value)
                c_value = c_k
            total = total + (c_value << self.addend_shift)
        m.d.sync += self.p.eq(total)
        return m


#: Cycles of :func:`block_product`: operand registers, the block's pipeline register, its output register.
BLOCK_PRODUCT_LATENCY = 3


def block_product(m, a, b, enable, *, name="block"):
    """``a * b`` on one DSP block, registered before, inside and after it, latency :data:`BLOCK_PRODUCT_LATENCY`.

    For operands that fit one block (each at most :data:`DSP_WIDTH` bits, of one signedness): the
    registers of :class:`PipelinedProduct`'s blocks, without its sum stage. A plain register per
    operand (the block's input registers), a plain register of the product (the multiplier's
    internal pipeline register) and a register with an enable after it (the block's output
    register, its hold input driven by ``~enable``: see the module notes for why it needs the
    enable). nextpnr times the block only at its ports: without the pipeline register the whole
    multiply would lie, untimed, between the operand and output registers.

    Parameters
    ----------
    m : Module
    a, b : Value
        Operands; they should come from registers or memories (a multiplexer with a constant arm
        in front of an operand register keeps it out of the block, see the module notes).
    enable : Value
        Loads the output register: high two cycles after the operands were valid (when the
        pipeline register holds their product). Not a constant.

    Returns
    -------
    Signal
        The product of the operands of 3 cycles before (held while ``enable`` is low).
    """
    if a.shape().signed != b.shape().signed:
        raise ValueError("block_product: operands of one signedness (a constant extension bit "
                         "would keep the operand registers out of the block)")
    if max(len(a), len(b)) > DSP_WIDTH:
        raise ValueError(f"block_product: operands of at most {DSP_WIDTH} bits, got {len(a)} and {len(b)}")
    a_reg = Signal(a.shape(), name=f"{name}_a", reset_less=True)
    b_reg = Signal(b.shape(), name=f"{name}_b", reset_less=True)
    width = len(a) + len(b)
    shape = signed(width) if a.shape().signed else unsigned(width)
    product = Signal(shape, name=f"{name}_pp", reset_less=True)
    out = Signal(shape, name=f"{name}_p", reset_less=True)
    m.d.sync += [a_reg.eq(a), b_reg.eq(b), product.eq(a_reg * b_reg)]
    with m.If(enable):  # the enable keeps this on the block's output register
        m.d.sync += out.eq(product)
    return out
