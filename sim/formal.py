"""Formal equivalence: hardware units proved equal to the golden arithmetic for every input.

Simulation checks the vectors it is given; a proof covers them all. Each check builds a *miter*:
the unit as ``hw`` generates it (Amaranth -> RTLIL) beside a reference circuit written from
``golden.arith``, both fed the same inputs, and asks Yosys's SAT solver (``sat -prove``) whether any
input makes their outputs differ. ``-verify`` turns a counterexample into a failure whose inputs
are reported.

The reference is the specification itself, not a second design:

- a multiplier lane is a function of two narrow codes, so its reference is the table of
  ``golden.arith.product`` over every (activation, weight) pair, as a Verilog ``case``; the
  widest lanes (integer weights of 6 bits and more) exceed a practical table and use the defining
  expression of ``golden.arith.int_product``, the signed product ``a * w``;
- the requantizer holds two wide products (accumulator times beta code, times ``M_c``), and SAT
  cannot prove two differently built multipliers equal at these widths (a 24 x 14-bit product ran
  ten minutes without an answer). Its proof is cut at the product units: the datapath around them
  (operands routed, ROM read, bias, rounding shift, clamp, valid/channel/tag) against golden's
  ``requantize`` after the product, the products free (:class:`RequantHarness`); and each product
  unit by its partial products (:class:`ProductHarness`). docs/arithmetic.md, section 3.1, states
  what each proves and why together they give ``requantize`` for every input.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from asqhw.errors import UserError
from asqhw.toolchain import PIP_FIX, require, tool_env
from golden import arith, formats
from hw.rtl.dsp import PipelinedProduct
from hw.rtl.requant import Requantizer

#: Largest ``act_bits + w_bits`` of a lane proved against a full table of golden products: every
#: POST and POT lane (at most 10 bits); wider tables cost Yosys about a minute (12 bits) and over
#: seven (14 bits), so integer lanes of 6 bits and more are proved against ``a * w``.
TABLE_BITS_MAX = 10


class ProofFailed(AssertionError):
    """The SAT solver found an input on which the unit and golden differ (see ``log``)."""

    def __init__(self, what: str, log: str):
        # Signal rows of ``-show-inputs``: "\in_a ..." (one step), "  3 \acc ..." (step 3).
        inputs = [ln for ln in log.splitlines()
                  if ln.strip().startswith("\\in_") or re.match(r"\s+\d+ \\", ln)]
        super().__init__(f"{what}: not equal to golden; counterexample:\n" + "\n".join(inputs))
        self.log = log


@dataclass(frozen=True)
class Proof:
    """What was proved, and how large the SAT problem was."""

    what: str
    variables: int
    clauses: int


def _yosys(script: str, workdir: Path) -> subprocess.CompletedProcess:
    yosys = require(tool_env()["YOSYS"], PIP_FIX)
    return subprocess.run([yosys, "-p", script], cwd=workdir, capture_output=True, text=True,
                          env=tool_env())


def _prove(what: str, design: str, top_script: str, workdir: Path) -> Proof:
    """Run a proof script (``design`` holds its files' reads); raise :class:`ProofFailed` on a model."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = _yosys(design + top_script, workdir)
    log = result.stdout + result.stderr
    if "proof did fail" in log or "model found: FAIL" in log:
        raise ProofFailed(what, log)
    if result.returncode != 0 or "SUCCESS" not in log:
        raise UserError(f"{what}: yosys did not finish the proof (exit {result.returncode}):\n{log[-2000:]}")
    size = [ln for ln in log.splitlines() if ln.startswith("Solving problem with")]
    numbers = [int(tok) for tok in size[-1].split() if tok.isdigit()] if size else [0, 0]
    return Proof(what, numbers[0], numbers[1])


# ----------------------------------------------------------------------------- multiplier lanes


def _verilog_int(value: int, width: int) -> str:
    return f"-{width}'sd{-value}" if value < 0 else f"{width}'sd{value}"


def lane_reference(kind: str, w_bits: int, act_bits: int, act_signed: bool, frac_bits: int,
                   product_width: int) -> str:
    """Verilog module ``ref(a, w, p)``: golden's product of one activation and one weight code."""
    a_decl = f"input {'signed ' if act_signed else ''}[{act_bits - 1}:0] a"
    head = (f"module ref({a_decl}, input [{w_bits - 1}:0] w, "
            f"output reg signed [{product_width - 1}:0] p);\n")
    if act_bits + w_bits > TABLE_BITS_MAX:
        if kind != "int":
            raise ValueError(f"no table reference for a {kind} lane of {act_bits}+{w_bits} bits")
        # golden.arith.int_product: the signed product of the code and the two's complement weight.
        a = "a" if act_signed else "$signed({1'b0, a})"  # an unsigned operand makes `*` unsigned
        return head + f"  always @* p = {a} * $signed(w);\nendmodule\n"
    lines = [head, "  always @* case ({w, a})\n"]
    act_codes = range(-(1 << (act_bits - 1)), 1 << (act_bits - 1)) if act_signed else range(1 << act_bits)
    for w_raw, a in itertools.product(range(1 << w_bits), act_codes):
        w_code = arith.raw_to_int(w_raw, w_bits) if kind == "int" else w_raw
        value = int(arith.product(a, w_code, kind, w_bits, frac_bits))
        key = (w_raw << act_bits) | (a & ((1 << act_bits) - 1))
        lines.append(f"    {w_bits + act_bits}'d{key}: p = {_verilog_int(value, product_width)};\n")
    lines.append("  endcase\nendmodule\n")
    return "".join(lines)


def prove_combinational(dut, reference: str, what: str, workdir: Path) -> Proof:
    """Prove the combinational component ``dut`` equal to the Verilog module ``ref`` in ``reference``.

    The two must have the same ports (names and widths).
    """
    workdir = Path(workdir) / what.replace(" ", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dut.il").write_text(rtlil.convert(dut, name="dut"))
    (workdir / "ref.v").write_text(reference)
    design = "read_rtlil dut.il; read_verilog ref.v; proc; memory; opt_clean; "
    script = ("miter -equiv -flatten -make_assert dut ref miter; hierarchy -top miter; flatten; "
              "opt -fast; sat -verify -prove-asserts -show-inputs miter")
    return _prove(what, design, script, workdir)


def prove_lane(kind: str, w_bits: int, act_bits: int, act_signed: bool = False,
               frac_bits: int = formats.DEFAULT_POST_FRAC_BITS, workdir: Path = Path("build/formal"),
               reference_frac_bits: int | None = None) -> Proof:
    """Prove one ``hw`` multiplier lane (PE = 1) equal to golden's product for all codes.

    ``reference_frac_bits`` (default ``frac_bits``) exists to show that a wrong table is caught.
    """
    from hw.rtl.mul import MulLane

    lane = MulLane(kind, w_bits, act_bits, act_signed, pe=1, frac_bits=frac_bits)
    ref_f = frac_bits if reference_frac_bits is None else reference_frac_bits
    what = f"{kind} lane w{w_bits} a{act_bits}{'s' if act_signed else 'u'} F{frac_bits}"
    reference = lane_reference(kind, w_bits, act_bits, act_signed, ref_f, lane.prod_shape.width)
    return prove_combinational(lane, reference, what, workdir)


# ----------------------------------------------------------------------------- sequential proofs


def _prove_sequential(what: str, harness, steps: int, workdir: Path) -> Proof:
    """Prove that ``harness.ok`` is 1 in time step ``steps`` from any state and any inputs before it.

    The harnesses check pipelines without feedback on the checked paths: every value a check reads
    in step ``steps`` went through registers loaded after its item entered, so it depends on the
    inputs of the item's own cycles, never on the state the item found. Unrolling ``steps`` steps
    from a free state therefore covers every item of every run, the first ones after reset
    included. The state is made free by removing the registers' ``init`` attributes, which ``sat``
    would otherwise impose as the first step's values (the ROMs are constants, not registers, and
    stay). The reset is held low (a reset empties the pipeline, which is not the behaviour under
    proof).
    """
    workdir = Path(workdir) / what.replace(" ", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "harness.il").write_text(rtlil.convert(harness, name="harness"))
    design = ("read_rtlil harness.il; hierarchy -top harness; proc; flatten; memory; opt -fast; "
              "setattr -unset init; ")
    script = (f"sat -seq {steps} -prove-skip {steps - 1} -set rst 0 -prove ok 1 -verify "
              "-show-inputs harness")
    return _prove(what, design, script, workdir)


# ----------------------------------------------------------------------------- wide products


def _delayed(m, value, cycles: int, name: str):
    """``value`` of ``cycles`` cycles before (a chain of plain registers in the harness)."""
    for k in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{k + 1}", reset_less=True)
        m.d.sync += reg.eq(value)
        value = reg
    return value


class _ObservedProduct(PipelinedProduct):
    """A :class:`hw.rtl.dsp.PipelinedProduct` that records its operand registers when elaborated.

    Only observes: the circuit is the one ``hw`` builds (the pieces are the registers ``_operand``
    returns, the multiplier inputs).
    """

    def _operand(self, m, value, shape, name):
        pieces = super()._operand(m, value, shape, name)
        self.pieces_of[name] = pieces
        return pieces


class ProductHarness(wiring.Component):
    """Checks a ``PipelinedProduct`` through its partial products (the cut points).

    ``ok`` is 1 unless, in this cycle, one of these fails (``t`` = now - 4):

    - the split: the registered pieces of the operands sampled one cycle before recompose them
      exactly, ``sum A_i 2^(o_i) = a + c_a`` and ``sum B_j 2^(o_j) = b + c_b``, where ``c`` is
      ``2^(w-1)`` for a signed operand beside an unsigned one (its sign bit is flipped) and 0
      otherwise;
    - the recombination: when ``valid`` was 1 at ``t``, ``p`` equals, modulo ``2^W`` (``W`` its
      width), ``sum A_i B_j 2^(o_i + o_j) - corr`` of the pieces of ``t``, ``corr`` being the
      unsigned operand shifted by the signed one's width - 1 (mixed signs) or 0, plus the addend
      ``c`` of ``t`` shifted by ``addend_shift`` for a unit built with one.

    The products ``A_i B_j`` are the very ``*`` the unit writes (the same cells on the same
    registers), so the SAT problem holds no second multiplier to compare; the rest is adders.
    """

    def __init__(self, a_shape, b_shape, addend_shape=None, addend_shift=0):
        self.a_shape, self.b_shape = a_shape, b_shape
        self.addend_shape, self.addend_shift = addend_shape, addend_shift
        ports = {"a": In(a_shape), "b": In(b_shape), "valid": In(1), "ok": Out(1)}
        if addend_shape is not None:
            ports["c"] = In(addend_shape)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        extra = {} if self.addend_shape is None else {"addend_shape": self.addend_shape,
                                                      "addend_shift": self.addend_shift}
        dut = _ObservedProduct(self.a_shape, self.b_shape, **extra)
        dut.pieces_of = {}
        dut._MustUse__silence = True  # elaborated here, so that its registers can be observed
        m.submodules.dut = dut.elaborate(platform)
        m.d.comb += [dut.a.eq(self.a), dut.b.eq(self.b), dut.valid.eq(self.valid)]
        if self.addend_shape is not None:
            m.d.comb += dut.c.eq(self.c)
        a_pieces, b_pieces = dut.pieces_of["a"], dut.pieces_of["b"]
        mixed = self.a_shape.signed != self.b_shape.signed

        a1, b1 = _delayed(m, self.a, 1, "a"), _delayed(m, self.b, 1, "b")
        c_a = (1 << (self.a_shape.width - 1)) if mixed and self.a_shape.signed else 0
        c_b = (1 << (self.b_shape.width - 1)) if mixed and self.b_shape.signed else 0
        split_ok = ((sum(r << o for o, r in a_pieces) == a1 + c_a)
                    & (sum(r << o for o, r in b_pieces) == b1 + c_b))

        corr = 0
        if mixed:
            signed_shape, unsigned_value = ((self.a_shape, b1) if self.a_shape.signed
                                            else (self.b_shape, a1))
            corr = unsigned_value << (signed_shape.width - 1)
        recombined = sum((ra * rb) << (oa + ob) for oa, ra in a_pieces for ob, rb in b_pieces) - corr
        if self.addend_shape is not None:  # the addend of the operands' cycle, added at the end
            recombined = recombined + (_delayed(m, self.c, 1, "c") << self.addend_shift)
        reference = Signal(dut.p.shape(), name="reference")  # modulo 2^W, read as p is
        m.d.comb += reference.eq(recombined)
        reference_p = _delayed(m, reference, PipelinedProduct.LATENCY - 1, "reference")
        valid_t = _delayed(m, self.valid, PipelinedProduct.LATENCY, "valid")
        m.d.comb += self.ok.eq(split_ok & (~valid_t | (dut.p == reference_p)))
        return m


def prove_product(a_shape, b_shape, workdir: Path = Path("build/formal"), addend_shape=None,
                  addend_shift: int = 0) -> Proof:
    """Prove ``hw.rtl.dsp.PipelinedProduct(a_shape, b_shape)`` splits and recombines ``a * b`` exactly
    (``+ (c << addend_shift)`` with an ``addend_shape``).

    See :class:`ProductHarness` for the two facts proved for every input, and docs/arithmetic.md
    (section 3.1) for why they give ``p = a * b``.
    """
    def name(shape):
        return f"{'s' if shape.signed else 'u'}{shape.width}"

    what = f"product {name(a_shape)}x{name(b_shape)}"
    if addend_shape is not None:
        what += f"+{name(addend_shape)}<<{addend_shift}"
    return _prove_sequential(what, ProductHarness(a_shape, b_shape, addend_shape, addend_shift),
                             PipelinedProduct.LATENCY + 1, workdir)


# ----------------------------------------------------------------------------- requantizer


class _FreeProduct(PipelinedProduct):
    """A product unit's ports with nothing behind them: the proof drives ``p`` with a free value."""

    def elaborate(self, platform):
        return Module()


class _ShellRequantizer(Requantizer):
    """The requantizer ``hw`` builds, its two product units replaced by :class:`_FreeProduct`
    (listed in ``products`` as its ``elaborate`` asks for them)."""

    def __init__(self, rq):
        super().__init__(rq.specs, rq.acc_width, rq.channels, len(rq.i.payload.tag), g_acc_width=rq.g_acc_width)
        self.products = []
        self._MustUse__silence = True  # elaborated by the proof itself, to reach its product units

    def product_unit(self, a_shape, b_shape, **extra):
        unit = _FreeProduct(a_shape, b_shape, **extra)
        unit._MustUse__silence = True  # the harness elaborates the requantizer itself
        self.products.append(unit)
        return unit


def _switch(m, selector, cases, target):
    """``target = cases[k]`` when ``selector == k`` (a constant per case), else 0."""
    with m.Switch(selector):
        for k, value in enumerate(cases):
            with m.Case(k):
                m.d.comb += target.eq(value)


def rshift_round_hdl(x, n: int, rounding: str = "half_up"):
    """``golden.arith.rshift_round`` written as a circuit: ``(x + 2^(n-1)) >> n`` (floor shift).

    ``rounding="half_down"`` (``(x + 2^(n-1) - 1) >> n``) is a deliberately wrong specification,
    there to show that the proof notices.
    """
    if n == 0:
        return x
    half = (1 << (n - 1)) - (1 if rounding == "half_down" else 0)
    return (x + half) >> n


def clamp_hdl(x, lo, hi):
    """``golden.arith.clamp`` written as a circuit (either bound may be ``None``)."""
    if lo is not None:
        x = Mux(x < lo, lo, x)
    if hi is not None:
        x = Mux(x > hi, hi, x)
    return x


class RequantHarness(wiring.Component):
    """Checks the requantizer ``rq`` rebuilt with its two product units cut out (outputs free).

    Inputs are the requantizer's (``layer``, ``g``, ``acc``, ``chan``, ``tag``, ``valid``) and the
    two products' outputs ``p1``, ``p2`` (free: any value, every cycle). An item entering at ``t``
    with ``valid``, a layer of the list and a channel of that layer is checked three times:

    - R1, at ``t``: the first product unit is offered ``(acc, g_eff)`` (a requantizer whose beta
      layers' accumulators fit one 16-bit digit, ``split_acc``: ``(acc[:16] ^ 2^15, g_eff)`` and the
      addend ``2 ((acc + 2^15) >> 16) - g_eff``), ``g_eff`` = ``g`` for a layer
      with ``G > 0`` and 1 otherwise, with its ``valid`` set;
    - R2, at ``t + 4``: the second unit is offered ``(p1, M_c)``, the first unit's output of that
      cycle and the layer's ``M`` of the channel (from the bundle's list, not the ROM), ``valid`` set;
    - R3, at ``t + 10``: ``o.valid`` is ``valid(t)`` for every item, and for a checked one whose
      product ``P = p2(t + 8)`` lies within ``|P| <= 2^(acc_width-1) * g_max * max|M|`` (every
      ``acc * g * M`` the layer can form), ``o.value = clamp(rshift_round(P + (B_c << G), S + G),
      lo, hi)``, golden's arithmetic after the product, with ``chan`` and ``tag`` carried along.
    """

    def __init__(self, rq, rounding="half_up", reference_specs=None):
        self.rq = _ShellRequantizer(rq)
        self.specs = list(rq.specs if reference_specs is None else reference_specs)
        self.acc_width, self.rounding = rq.acc_width, rounding
        acc_width = rq.acc_width
        a_shape, b_shape, extra = self.rq._acc_g_shapes()
        p1_shape = PipelinedProduct(a_shape, b_shape, **extra).p.shape()
        p2_width = (self.rq.x_width if self.rq.split_acc else p1_shape.width) + self.rq.m_width
        super().__init__({
            "layer": In(self.rq.layer.shape()), "g": In(self.rq.g.shape()),
            "acc": In(signed(acc_width)), "chan": In(self.rq.i.payload.chan.shape()),
            "tag": In(self.rq.i.payload.tag.shape()), "valid": In(1),
            "p1": In(p1_shape), "p2": In(signed(p2_width)),
            "ok": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rq, specs = self.rq, self.specs
        m.submodules.rq = rq.elaborate(platform)
        acc_g, times_m = rq.products
        m.d.comb += [rq.layer.eq(self.layer), rq.g.eq(self.g), rq.i.valid.eq(self.valid),
                     rq.i.payload.acc.eq(self.acc), rq.i.payload.chan.eq(self.chan),
                     rq.i.payload.tag.eq(self.tag), acc_g.p.eq(self.p1), times_m.p.eq(self.p2)]

        def checked(layer, chan, valid):
            known = Signal(name="known")
            _switch(m, layer, [chan < len(s.M) for s in specs], known)
            return valid & known

        def per_channel(layer, chan, field, name):
            values = [v for s in specs for v in getattr(s, field)]
            out = Signal(signed(arith.signed_width(min(values + [0]), max(values + [0]))), name=name)
            with m.Switch(layer):
                for k, s in enumerate(specs):
                    with m.Case(k):
                        _switch(m, chan, getattr(s, field), out)
            return out

        # R1, item of now.
        g_eff = Signal.like(self.g, name="g_eff")
        _switch(m, self.layer, [self.g if s.G else 1 for s in specs], g_eff)
        if rq.split_acc:
            # acc = d + h 2^16 (d: the low 16 bits read signed): the unit is offered d + 2^15 (those
            # bits, the top one flipped), g_eff and the addend 2h - g_eff (at 2^15).
            low = self.acc.as_unsigned()[:16] ^ (1 << 15)
            h = (self.acc + (1 << 15)) >> 16
            r1 = (acc_g.a == low) & (acc_g.b == g_eff) & (acc_g.c == (h << 1) - g_eff) & acc_g.valid
            p1_used = acc_g.p[:rq.x_width].as_signed()
        else:
            r1 = (acc_g.a == self.acc) & (acc_g.b == g_eff) & acc_g.valid
            p1_used = acc_g.p
        ok1 = ~checked(self.layer, self.chan, self.valid) | r1

        # R2, item of now - 4.
        lat = PipelinedProduct.LATENCY
        layer4, chan4 = _delayed(m, self.layer, lat, "layer"), _delayed(m, self.chan, lat, "chan")
        valid4 = _delayed(m, self.valid, lat, "valid")
        m_c = per_channel(layer4, chan4, "M", "m_spec")
        r2 = (times_m.a == p1_used) & (times_m.b == m_c) & times_m.valid
        ok2 = ~checked(layer4, chan4, valid4) | r2

        # R3, item of now - 10 (6 cycles after R2's).
        rest = rq.LATENCY - lat
        layer10, chan10 = _delayed(m, layer4, rest, "layer4"), _delayed(m, chan4, rest, "chan4")
        valid10 = _delayed(m, valid4, rest, "valid4")
        tag10 = _delayed(m, self.tag, rq.LATENCY, "tag")
        product = _delayed(m, self.p2, rest - lat, "p2")  # p2(t + 8), the product of the item
        b_c = per_channel(layer10, chan10, "B", "b_spec")
        bound = Signal(len(product), name="p_bound")
        _switch(m, layer10, [(1 << (self.acc_width - 1)) * (s.g_max if s.G else 1) * max(abs(v) for v in s.M)
                             for s in specs], bound)
        in_range = (product <= bound) & (product >= -bound)
        width = max(len(product), len(b_c) + max(s.G for s in specs)) + 3
        reference = Signal(signed(width), name="reference")
        with m.Switch(layer10):
            for k, s in enumerate(specs):
                with m.Case(k):
                    t = product + (b_c << s.G)
                    m.d.comb += reference.eq(clamp_hdl(rshift_round_hdl(t, s.S + s.G, self.rounding),
                                                       s.lo, s.hi))
        o = rq.o
        r3 = (o.payload.value == reference) & (o.payload.chan == chan10) & (o.payload.tag == tag10)
        ok3 = (o.valid == valid10) & (~(checked(layer10, chan10, valid10) & in_range) | r3)
        m.d.comb += self.ok.eq(ok1 & ok2 & ok3)
        return m


def product_shapes(rq) -> list[tuple]:
    """Operand shapes the requantizer ``rq`` gives its two product units (``acc * g_eff``, ``* M_c``),
    as its ``elaborate`` asks for them."""
    shell = _ShellRequantizer(rq)
    shell.elaborate(None)
    return [(unit.a_shape, unit.b_shape) if unit.addend_shape is None
            else (unit.a_shape, unit.b_shape, unit.addend_shape, unit.addend_shift) for unit in shell.products]


def prove_requantizer_datapath(rq, what: str = "requantizer", workdir: Path = Path("build/formal"),
                               rounding: str = "half_up", reference_specs=None) -> Proof:
    """Prove R1-R3 of :class:`RequantHarness` for the requantizer ``rq``'s constants and widths.

    ``rq`` is an ``hw.rtl.requant.Requantizer``; the proof rebuilds it with the same parameters and
    its product units cut out. ``rounding`` and ``reference_specs`` (default: ``rq.specs``) exist to
    show that a wrong specification is caught.
    """
    harness = RequantHarness(rq, rounding, reference_specs)
    return _prove_sequential(f"{what} datapath", harness, Requantizer.LATENCY + 1, workdir)


def prove_requantizer(rq, what: str = "requantizer", workdir: Path = Path("build/formal"),
                      rounding: str = "half_up") -> list[Proof]:
    """Prove the requantizer ``rq`` (an ``hw.rtl.requant.Requantizer``) equal to golden's ``requantize``.

    Three proofs whose composition is the claim (docs/arithmetic.md, section 3.1): the datapath
    with its product units cut out (:class:`RequantHarness`), and each of the two product units at
    the operand shapes ``rq`` gives them (:func:`prove_product`).
    """
    datapath = prove_requantizer_datapath(rq, what, workdir, rounding)
    return [datapath] + [prove_product(a, b, workdir) for a, b in product_shapes(rq)]


def main(argv=None) -> int:
    """``python -m sim.formal BUNDLE...``: prove each bundle's requantizer, as the generator builds it."""
    import argparse
    import time
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from hw.eda.generate import build_top

    # Only the requantizer of the accelerator built is elaborated; its other units are not.
    warnings.simplefilter("ignore", UnusedElaboratable)

    parser = argparse.ArgumentParser(prog="python -m sim.formal", description=main.__doc__)
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle folders (with manifest.json)")
    parser.add_argument("--workdir", type=Path, default=Path("build/formal"),
                        help="where the harnesses and Yosys logs go (default: build/formal)")
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        start = time.monotonic()
        for proof in prove_requantizer(build_top(bundle).requant, bundle.name, args.workdir):
            print(f"{bundle}: {proof.what}: proved ({proof.variables} variables, {proof.clauses} clauses)")
        print(f"{bundle}: requantizer equal to golden's requantize, {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
