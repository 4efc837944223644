"""Multiplier lanes: one activation times PE weights, for POST, POT and uniform weights.

A *lane* is what one activation input of the MAC array needs: it takes one activation code ``a``
and the PE weight codes of that input position (one per output channel computed in parallel) and
returns PE signed products. Grouping the multipliers per activation lane is what makes POST cheap:
the odd-exponent table ``T[a] = round(a * sqrt2 * 2^F)`` depends on ``a`` only, so a lane reads it
once and broadcasts it to its PE shifters (docs/design.md 2.2: ~100 LUT4 per MAC on iCE40, against ~240
for a private table per PE).

Arithmetic (docs/arithmetic.md, golden/arith.py is the specification):

- POST, b-bit sign-magnitude weight, ``m`` = low b-1 bits, ``m = 0`` is zero, else ``e = m - 1``:
  even ``e``: ``(a << e/2) << F``; odd ``e``: ``T[a] << (e-1)/2``. Both shift by ``(m-1) >> 1``,
  so the lane picks ``a << F`` (``m`` odd) or ``T[a]`` (``m`` even) and barrel-shifts it.
- POT: ``a << (m - 1)``.
- Uniform: two's complement ``a * w``.
The sign bit of POST/POT negates the magnitude.

All lanes are purely combinational (latency 0); the MAC array registers their outputs.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import DEFAULT_POST_FRAC_BITS, WEIGHT_KINDS
from hw.rtl.limits import MAX_BITS, check_mul_bits

#: Multiplier kinds: one per weight kind.
MUL_KINDS = WEIGHT_KINDS


def post_table(bits: int, frac_bits: int) -> list[int]:
    """The odd-exponent table ``T[a]`` for every unsigned ``bits``-bit activation code ``a``.

    Delegates to the golden model, the single specification of the arithmetic.
    """
    from golden import arith

    return [int(v) for v in arith.post_table(bits, frac_bits)]


def act_max_abs(act_bits: int, act_signed: bool) -> int:
    """Largest |a| of an activation code: 2^(b-1) signed, 2^b - 1 unsigned."""
    return (1 << (act_bits - 1)) if act_signed else (1 << act_bits) - 1


def product_max_abs(kind: str, w_bits: int, act_bits: int, act_signed: bool, frac_bits: int) -> int:
    """Largest |product| a lane of this kind can produce (sizes the product signal exactly)."""
    amax = act_max_abs(act_bits, act_signed)
    if kind == "int":
        return amax * (1 << (w_bits - 1))
    k = (1 << (w_bits - 1)) - 2  # largest exponent e
    if kind == "pot":
        return amax << k
    table_max = max(post_table(act_bits, frac_bits))
    return max((amax << (k // 2)) << frac_bits, table_max << ((k - 1) // 2) if k >= 1 else 0)


def product_shape(kind, w_bits, act_bits, act_signed, frac_bits):
    """Signed shape that holds every product of the lane."""
    return signed(product_max_abs(kind, w_bits, act_bits, act_signed, frac_bits).bit_length() + 1)


def logic_product(a, b):
    """``a * b`` (``b`` signed) as a sum of shifted partial products, never a ``$mul`` cell.

    ``a * b = sum_{i < n-1} b_i a 2^i - b_{n-1} a 2^{n-1}`` for an n-bit two's complement ``b``;
    Yosys turns it into carry-chain adders and, unlike ``*``, never into a DSP block.
    """
    n = len(b)
    a = a.as_signed() if a.shape().signed else a
    terms = [Mux(b[i], a, 0) << i for i in range(n - 1)] or [0]
    # A balanced adder tree: log2(n) carry chains deep instead of n (the clock's critical path),
    # then one subtractor for the sign bit's term.
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0] - (Mux(b[n - 1], a, 0) << (n - 1))



def pipelined_logic_product_latency(b_width: int, levels_per_stage: int = 2) -> int:
    """Latency of :func:`pipelined_logic_product` for a ``b_width``-bit ``b``."""
    size, depth, latency = (b_width - 1) // 2 + 1, 1, 0
    while True:
        if depth % levels_per_stage == 0 or size == 1:
            latency += 1
        if size == 1:
            return latency
        size, depth = (size + 1) // 2, depth + 1


def pipelined_logic_product(m, a, b, *, levels_per_stage=2, name="product"):
    """:func:`logic_product` with a register after every ``levels_per_stage`` adder levels.

    The partial products and the first level of the balanced tree (where the sign bit's term is
    subtracted) form level 1; the result is registered. Plain registers (no reset, no enable), so
    the product of the operands of cycle n is on the returned value in cycle n + latency.

    Returns
    -------
    (Value, int)
        The registered product and its latency in cycles.
    """
    n = len(b)
    a = a.as_signed() if a.shape().signed else a
    terms = [Mux(b[i], a, 0) << i for i in range(n - 1)]
    sign_term = Mux(b[n - 1], a, 0) << (n - 1)
    level = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
    level.append((terms[-1] if len(terms) % 2 else 0) - sign_term)
    depth, latency = 1, 0
    while True:
        if depth % levels_per_stage == 0 or len(level) == 1:
            regs = [Signal(v.shape(), name=f"{name}_s{latency}_{k}", reset_less=True) for k, v in enumerate(level)]
            m.d.sync += [r.eq(v) for r, v in zip(regs, level, strict=True)]
            level, latency = regs, latency + 1
        if len(level) == 1:
            return level[0], latency
        level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
        depth += 1

class MulLane(wiring.Component):
    """One activation times ``pe`` weight codes, combinational.

    Parameters
    ----------
    kind : {"post", "pot", "int"}
        Weight format.
    w_bits : int
        Weight code width (POST 2..5, POT 2..4, int 2..8).
    act_bits : int
        Activation code width.
    act_signed : bool
        Activation codes are two's complement (only the uniform lane accepts signed ones).
    pe : int
        Number of weights (output channels) sharing this activation.
    frac_bits : int
        POST table fractional bits F (ignored by POT and int).
    in_logic : bool
        Uniform lanes only: build the products as explicit shift-and-add logic, so that synthesis
        keeps them out of the DSP blocks (which go to the wider requantizer / ASQ products).

    Ports
    -----
    a : In(act shape)
        Activation code.
    w : In(ArrayLayout(unsigned(w_bits), pe))
        Weight codes, raw bits (sign-magnitude for POST/POT, two's complement for int).
    p : Out(ArrayLayout(product shape, pe))
        Signed products; latency 0, one set per cycle.
    """

    def __init__(self, kind: str, w_bits: int, act_bits: int, act_signed: bool = False, pe: int = 1,
                 frac_bits: int = DEFAULT_POST_FRAC_BITS, in_logic: bool = False):
        if kind not in MUL_KINDS:
            raise ValueError(f"MulLane kind {kind!r} unknown; use one of {MUL_KINDS}")
        check_mul_bits(kind, w_bits)
        if not 1 <= act_bits <= MAX_BITS + 1:  # 9: signed lane for both int8 and uint8 codes
            raise ValueError(f"MulLane act_bits={act_bits} outside 1..{MAX_BITS + 1}")
        if act_signed and kind != "int":
            raise ValueError(f"MulLane kind {kind!r} takes unsigned activations only")
        if pe < 1:
            raise ValueError(f"MulLane pe={pe} must be >= 1")
        if frac_bits < 0:
            raise ValueError(f"MulLane frac_bits={frac_bits} must be >= 0")
        self.kind, self.w_bits, self.act_bits = kind, w_bits, act_bits
        self.act_signed, self.pe, self.frac_bits = act_signed, pe, frac_bits
        self.in_logic = in_logic
        self.act_shape = signed(act_bits) if act_signed else unsigned(act_bits)
        self.prod_shape = product_shape(kind, w_bits, act_bits, act_signed, frac_bits)
        super().__init__({
            "a": In(self.act_shape),
            "w": In(data.ArrayLayout(unsigned(w_bits), pe)),
            "p": Out(data.ArrayLayout(self.prod_shape, pe)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.kind == "int":
            for i in range(self.pe):
                product = self.a * self.w[i].as_signed()
                if self.in_logic:
                    product = logic_product(self.a, self.w[i].as_signed())
                m.d.comb += self.p[i].eq(product)
            return m
        if self.kind == "post":
            odd = self._lane_table(m)
        mbits = self.w_bits - 1
        for i in range(self.pe):
            code = self.w[i]
            mag_code = code[:mbits]
            negative = code[mbits]
            shift = (mag_code - 1)[:mbits]
            if self.kind == "pot":
                base = self.a
            else:
                # m odd <=> e even: a << F; m even <=> e odd: T[a]. Both then shift by (m-1) >> 1.
                base = Mux(mag_code[0], self.a << self.frac_bits, odd)
                shift = shift >> 1
            mag = Mux(mag_code == 0, 0, base << shift)
            m.d.comb += self.p[i].eq(Mux(negative, -mag, mag))
        return m

    def _lane_table(self, m):
        """The lane's one copy of T[a], read combinationally and shared by its PE shifters."""
        table = post_table(self.act_bits, self.frac_bits)
        width = max(max(table).bit_length(), 1)
        rom = memory.Memory(shape=unsigned(width), depth=len(table), init=table)
        m.submodules.post_table = rom
        port = rom.read_port(domain="comb")
        m.d.comb += port.addr.eq(self.a)
        return port.data

