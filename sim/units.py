"""The hardware units of one BITS, side by side in one design, so one simulator build tests them all.

A Verilator build costs 15-40 s on 2 cores; building every unit separately for every BITS and both
simulators would spend most of ``make test`` in the C++ compiler. :class:`UnitBench` instantiates
the real ``hw`` components (multiplier lanes, MAC array, requantizer, ASQ unit) for one BITS and
forwards each one's ports unchanged under a prefix (``post__a``, ``mac__acc``, ``rq__i__valid``,
``asq__gap__payload``, ...): the Verilog of each unit is exactly what ``hw`` generates for it inside
the accelerator, and one build serves the testbenches of all of them. (A plain
``wiring.connect`` forwarding cannot be used: an always-ready stream's ``ready`` is a constant, and
constants cannot be ports of a top module; the wrapper flattens the members and skips those.)

The constants the requantizer and the ASQ unit are built with are random but reproducible
(:func:`unit_constants`), so the cocotb side recomputes the very same ones from the parameters it is
handed and feeds them to the reference model (:mod:`sim.reference`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Const, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith, formats
from golden.formats import BETA_FRAC, BETA_MAX, Y_MAX

#: BITS the unit testbenches run at (the issue's list).
UNIT_BITS = (2, 3, 4, 8)

#: MAC array shape under test: PE x SIMD, and the longest group (a 3x3x16 conv over SIMD 4).
MAC_PE, MAC_SIMD, MAC_MAX_ITEMS = 4, 4, 36
#: Multiplier lanes are as wide as every weight code at low BITS; 16 lanes at 8 bits (16 steps).
LANE_PE_MAX = 16
TAG_WIDTH = 6


def lane_kinds(bits: int) -> list[tuple[str, str, bool]]:
    """``(port prefix, multiplier kind, signed activations)`` of every lane offered at ``bits``."""
    kinds = [(k, k, False) for k in (formats.POST, formats.POT) if bits in formats.OFFERED_BITS[k]]
    kinds.append(("int", "int", False))
    if bits == 8:
        kinds.append(("ints", "int", True))  # conv1: signed int8 image codes
    return kinds


def lane_pe(bits: int) -> int:
    return min(1 << bits, LANE_PE_MAX)


def mac_kind(bits: int) -> str:
    """The main engine's multiplier at ``bits``: POST where offered (the paper's), else uniform."""
    return formats.POST if bits in formats.POST_BITS else formats.INT


def mac_acc_width(bits: int, frac_bits: int = formats.DEFAULT_POST_FRAC_BITS) -> int:
    """Proven accumulator width for MAC_MAX_ITEMS x MAC_SIMD products (golden's rule)."""
    pmin, pmax = arith.product_range(0, (1 << bits) - 1, mac_kind(bits), bits, frac_bits)
    return arith.acc_width(MAC_MAX_ITEMS * MAC_SIMD, pmin, pmax)


@dataclass(frozen=True)
class UnitConstants:
    """Constants of the requantizer layers and ASQ configurations in a :class:`UnitBench`."""

    requant: tuple  # of hw.rtl.requant.RequantSpec: (LSQ codes, ASQ-input y, logits)
    asq: tuple  # of (golden.arith.AsqConstants, channels, pixels)


def unit_constants(bits: int, seed: int) -> UnitConstants:
    """Random constants for ``bits``, reproducible from ``(bits, seed)``."""
    from hw.rtl.requant import RequantSpec

    rng = np.random.default_rng([bits, seed])
    qmax = (1 << bits) - 1

    def spec(n, *, G, lo, hi, S):
        M = tuple(int(v) for v in rng.integers(-(1 << 15) + 1, 1 << 15, n))
        B = tuple(int(v) for v in rng.integers(-(1 << 20), 1 << 20, n))
        return RequantSpec(M=M, B=B, S=S, G=G, lo=lo, hi=hi, g_max=BETA_MAX if G else 1)

    requant = (
        spec(16, G=0, lo=0, hi=qmax, S=24 - (8 - bits)),  # LSQ codes
        spec(16, G=BETA_FRAC, lo=0, hi=Y_MAX, S=14),  # y for an ASQ unit, from an ASQ input
        spec(10, G=0, lo=None, hi=None, S=12),  # logits
    )

    def asq(channels, hidden, pixels, s_code, FS):
        R = (s_code << BETA_FRAC).bit_length() + formats.RECIP_BITS
        consts = arith.AsqConstants(
            W1=rng.integers(-2047, 2048, (hidden, channels)) if hidden else None,
            b1=rng.integers(-(1 << 18), 1 << 18, hidden) if hidden else None,
            S1=18, W2=rng.integers(-2047, 2048, hidden if hidden else channels),
            b2=int(rng.integers(1 << 18, 1 << 20)), S2=12, G=BETA_FRAC,
            beta_min=1 << (BETA_FRAC - formats.BETA_MIN_SHIFT), beta_max=BETA_MAX, s_code=s_code, FS=FS,
            R=R, FY=8, qmax=qmax)
        return consts, channels, pixels

    return UnitConstants(requant=requant, asq=(asq(16, 4, 16, 1500, 12), asq(4, 0, 4, 700, 10)))


class UnitBench(wiring.Component):
    """Every unit the accelerator is built from, for one BITS, ports forwarded under prefixes.

    Members: one :class:`hw.rtl.mul.MulLane` per multiplier kind offered at ``bits`` (``post``,
    ``pot``, ``int``, and ``ints`` with signed 8-bit activations at 8 bits), ``mac`` (a
    :class:`hw.rtl.mac.MacArray` PE x SIMD of the main engine's kind), ``rq`` (a
    :class:`hw.rtl.requant.Requantizer` with three layers) and ``asq`` (a :class:`hw.rtl.asq.AsqUnit` with a
    16-channel and a 4-channel configuration).
    """

    def __init__(self, bits: int, seed: int = 1):
        from hw.rtl.asq import AsqConfig, AsqUnit
        from hw.rtl.mac import MacArray
        from hw.rtl.mul import MulLane
        from hw.rtl.requant import Requantizer

        if bits not in UNIT_BITS:
            raise ValueError(f"UnitBench bits={bits} not one of {UNIT_BITS}")
        self.bits, self.consts = bits, unit_constants(bits, seed)
        frac = formats.DEFAULT_POST_FRAC_BITS
        self.units = {
            prefix: MulLane(kind, bits, bits, act_signed, pe=lane_pe(bits), frac_bits=frac)
            for prefix, kind, act_signed in lane_kinds(bits)
        }
        self.units["mac"] = MacArray(mac_kind(bits), bits, bits, pe=MAC_PE, simd=MAC_SIMD,
                                     acc_width=mac_acc_width(bits), frac_bits=frac)
        self.units["rq"] = Requantizer(self.consts.requant, acc_width=mac_acc_width(bits), channels=16,
                                       tag_width=TAG_WIDTH)
        self.units["asq"] = AsqUnit([AsqConfig(k, c, p, Y_MAX) for k, c, p in self.consts.asq],
                                    tag_width=TAG_WIDTH)
        # Flat ports named as Amaranth names nested members (``rq__i__valid``); constant members
        # (the ``ready`` of an always-ready stream) are not ports of a Verilog top.
        self.links = [
            ("__".join((name,) + tuple(str(p) for p in path)), member, value)
            for name, unit in self.units.items()
            for path, member, value in unit.signature.flatten(unit)
            if not isinstance(value, Const)
        ]
        super().__init__({port: (In if member.flow == wiring.In else Out)(member.shape)
                          for port, member, _ in self.links})

    def elaborate(self, platform):
        m = Module()
        for name, unit in self.units.items():
            m.submodules[name] = unit
        for port, member, value in self.links:
            outer = getattr(self, port)
            m.d.comb += value.eq(outer) if member.flow == wiring.In else outer.eq(value)
        return m


def write_unit_verilog(bits: int, path, seed: int = 1) -> Path:
    """Write :class:`UnitBench` Verilog (top module ``units``) to ``path``; keep it if unchanged.

    Leaving an identical file untouched keeps its timestamp, so the simulator builds of an earlier
    run are reused instead of recompiled.
    """
    from hw.eda.verilog import write_verilog

    return write_verilog(UnitBench(bits, seed), path, name="units", keep_if_unchanged=True)


def run_unit_testbench(simulator: str, bits: int, test_module: str, *, seed: int = 1,
                       waves: bool = False) -> tuple[int, Path]:
    """Build (or reuse) the :class:`UnitBench` of ``bits`` on ``simulator`` and run ``test_module``.

    The build folder is ``units-<simulator>-b<bits>-s<seed>`` under :data:`sim.runner.BUILD_ROOT`
    (read at call time); every unit's testbench module runs against the same build. Returns
    :func:`sim.runner.run_cocotb`'s result; raises :class:`sim.runner.SimulationFailed` when a cocotb
    test fails.
    """
    from sim import runner
    from sim.tb import params_env

    source = write_unit_verilog(bits, runner.BUILD_ROOT / f"units-b{bits}-s{seed}" / "units.v", seed)
    return runner.run_cocotb(
        simulator=simulator, sources=[source], toplevel="units", test_module=test_module,
        build_dir=runner.BUILD_ROOT / f"units-{simulator}-b{bits}-s{seed}", waves=waves,
        extra_env=params_env(bits=bits, seed=seed),
    )
