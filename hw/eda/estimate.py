"""Resource and cycle estimates before synthesis, in the style of FINN's analytical estimates.

No tool runs: the design is elaborated by Amaranth into RTLIL (:func:`amaranth.back.rtlil.convert`;
its operators, flip-flops, memories and processes are read back here) and each element is priced by
a closed-form cost in LUT4s, flip-flops, block RAMs and DSPs, from its operand widths:

- ``a * b`` (both variable): ``a * b + a + b`` LUT4 (an array multiplier: one LUT4 and one carry
  per partial-product bit, and the final adder), or DSP tiles ``ceil(a/16) * ceil(b/16)`` (iCE40 ``SB_MAC16``) /
  ``ceil(a/18) * ceil(b/18)`` (ECP5 ``MULT18X18D``) when the board's DSPs are used and the product is
  wide enough for Yosys to map it (11 bits on iCE40). Times a constant that is not a power of two:
  one adder per extra set bit in logic, or a DSP on the same terms (Yosys maps those too).
- ``+``, ``-``, magnitude comparisons: one LUT4 per bit (carry chains).
- ``==``, ``!=``: one LUT4 per 2 bits (4 inputs per LUT, an AND tree on top).
- multiplexers and assignment lists: one LUT4 per bit; variable shifts: a barrel shifter,
  ``width * stages / 2`` (two mux stages per LUT4 where the inputs allow).
- bitwise logic: one LUT4 per 3 bits (it merges into neighbouring LUTs).
- memories: a synchronous-read memory goes to block RAM where that is cheaper by Yosys' own costs
  (:data:`MEMORY_COST`), counted as the best of the device's aspect ratios (iCE40 4 kbit: 256x16 ..
  2048x2; ECP5 18 kbit: 512x36 .. 16384x1); the others become LUT ROM or ECP5 distributed RAM (16
  bits per LUT4), or on iCE40 (RAMs) flip-flops.
- flip-flops: one per register bit.

Operand widths are the *effective* widths: sign-extension copies and constant-zero top bits (which
Amaranth adds when it widens operands) are not counted. Then one weight per group of kinds and family
(:data:`LUT_WEIGHTS`) accounts for what Yosys/ABC merges; :func:`calibrate` fits them to Yosys' LUT4
of the accelerator at several design points (``benchmarks/calibrate_lc.py``) and of the MAC arrays
of ``asqhw compare``.

Logic cells (what a device is full of, and what ``asqhw fit`` judges by): an iCE40 logic cell holds
one LUT4, its carry and one flip-flop; a flip-flop that its own LUT does not feed (a register after a
block RAM, a DSP or another register) takes a cell of its own. An ECP5 ``TRELLIS_COMB`` is one LUT4
or half a carry cell; flip-flops sit beside them in the slice. :data:`LC_WEIGHTS` turns the estimated
LUT4 and flip-flops into logic cells, fitted to nextpnr's packed counts of the same design points.

Fmax: :data:`FMAX_MODEL` gives the period as a constant plus a term in the logic-cell use, fitted to
the same designs (one nextpnr seed each). The critical paths lie in the design's own logic, so the
use term is small, and it is fitted only where the designs' use spans enough of the device (the ECP5
points fill 4-11 % of it: a constant period there). It is a first guess for the PLL search, not a
timing analysis: nextpnr's figure decides, and RTL with other critical paths needs the calibration
run again.

Every figure's largest error on the calibration designs is :data:`ESTIMATE_ERROR`, which the estimate
lines print beside it and ``asqhw fit`` uses as its margin; ``tests/test_estimate_calibration.py``
fails when a recorded design is estimated worse than that.

Cycles: the generator's own cycle model (:meth:`hw.rtl.accel.AsqAccel.cycles_per_inference`, checked
against simulation by the hw tests) and the MAC-bound lower limit ``sum(items)``.
"""

import math
from collections import Counter
from dataclasses import dataclass, field

from amaranth.back import rtlil

from hw.eda.boards import get_board
from hw.eda.verilog import top_ports

#: Estimated LUT4 = sum over kinds of (priced LUT4 of that kind x its weight), per family. The
#: weights say how much of each priced element survives Yosys/ABC; :func:`calibrate` fitted them
#: (non-negative least squares on the relative error, one weight per group of :data:`WEIGHT_GROUPS`)
#: to Yosys' LUT4 of the accelerator at the design points of ``benchmarks/calibrate_lc.py`` (each
#: counted 4 times) and of the 12 MAC arrays of ``asqhw compare`` per family (4 x 4, BITS 3 and 4).
#: Known miss: the arrays' estimates stay within about 25 % (iCE40) and 40 % (ECP5, DSP arrays low).
LUT_WEIGHTS = {
    "ice40": {"arith": 0.63, "compare": 0.63, "logic": 0.418, "multiply": 1.85, "mux": 0.418, "rom": 0.418,
              "shift": 0.418},
    "ecp5": {"arith": 1.441, "compare": 1.441, "logic": 0.133, "multiply": 1.927, "mux": 0.133, "rom": 0.133,
             "shift": 0.133},
}
KINDS = ("arith", "compare", "logic", "multiply", "mux", "rom", "shift")
#: Logic cells = ``lut4`` x estimated LUT4 + ``ff`` x estimated flip-flops, per family (see the module
#: docstring), fitted (:func:`calibrate_logic_cells`) to nextpnr's packed ``ICESTORM_LC`` /
#: ``TRELLIS_COMB`` counts of the accelerator (with its link) at the calibration design points.
LC_WEIGHTS = {
    "ice40": {"lut4": 0.349, "ff": 0.982},
    "ecp5": {"lut4": 1.036, "ff": 0.046},
}
#: Estimated period (ns) = ``base_ns`` + ``per_use_ns`` x logic-cell use (0..1), per family
#: (:func:`calibrate_fmax`), fitted to nextpnr's Fmax (one seed, on the PLL) of the calibration
#: design points that place. It knows nothing of the critical paths and moves only when the
#: calibration is run again on changed RTL: at 4911719's RTL the iCE40 points are a little slower as
#: the device fills (3.3 ns from empty to full); at cc4d6ee's RTL (the weight-ROM register) the ECP5
#: points fill 4-11 % of the device, too narrow a spread to fit a slope (:data:`MIN_USE_SPREAD`), so
#: a constant period (8.4-9.7 ns measured, the larger designs the slower).
FMAX_MODEL = {
    "ice40": {"base_ns": 22.31, "per_use_ns": 3.33},
    "ecp5": {"base_ns": 9.03, "per_use_ns": 0.0},
}
#: The estimate's largest relative error (|estimate - measured| / measured) on the calibration designs
#: (``benchmarks/calibrate_lc.py``; ``benchmarks/results/estimate_calibration_<board>.json`` holds every
#: design's error with these weights), per family and figure: logic cells against nextpnr's packed
#: count, LUT4 against Yosys', Fmax against nextpnr's (one seed). ``asqhw fit`` places a design only
#: when its estimate fits the device even if it is this much low; the estimate lines state it.
#: Measured at the RTL of commit 4911719 on the iCE40 (largest: 2.03 % logic cells at 2x4x4, 10.5 % LUT4
#: at 3x8x4, 3.5 % Fmax at 3x2x2) and of cc4d6ee on the ECP5 (1.2 % at 4x4x4, 6.8 % at 3x8x8, 7.5 % Fmax
#: at 3x2x2 and 4x8x8: 120 and 103 MHz against a constant 110.7), rounded up to whole per cent. These
#: are errors on the designs the weights were fitted to; a change of the RTL can move the estimate
#: further until the calibration is run again (the weights fitted at 25b5265's RTL put 4911719's
#: default design 22.6 % high in logic cells and 12.6 % low in Fmax on the iCEBreaker, 37 % low in
#: Fmax on the ULX3S; the weight-ROM register of cc4d6ee then left the ECP5 Fmax fitted at 4911719's
#: RTL 21-32 % low).
ESTIMATE_ERROR = {
    "ice40": {"logic_cells": 0.03, "lut4": 0.11, "fmax_mhz": 0.04},
    "ecp5": {"logic_cells": 0.02, "lut4": 0.07, "fmax_mhz": 0.08},
}
#: How Yosys' ``memory_libmap`` chooses between block RAM and logic for a synchronous-read memory: the
#: cheaper of ``block`` per block RAM and, per bit in logic, ``ram_bit`` (a memory with a write port:
#: iCE40 flip-flops, ECP5 distributed RAM) or ``rom_bit`` (a ROM in LUTs). Checked against Yosys 0.70
#: on the accelerator (iCE40: an 80-bit RAM and a 2048-bit ROM go to block RAM; ECP5: a 1024-bit RAM
#: and a 2048-bit ROM stay in logic, a 3072-bit RAM and a 2760-bit ROM do not) and on
#: ``tests/test_synth.py``'s ``Rams``.
MEMORY_COST = {"ice40": {"block": 64, "ram_bit": 1.0, "rom_bit": 1 / 16},
               "ecp5": {"block": 128, "ram_bit": 1 / 16, "rom_bit": 1 / 16}}
#: Block RAM aspect ratios (width, depth) per family.
BRAM_SHAPES = {
    "ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
    "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)],
}
#: DSP tile (a, b) and the narrowest product Yosys maps to one.
DSP_TILE = {"ice40": (16, 16, 11), "ecp5": (18, 18, 2)}


@dataclass(frozen=True)
class _Cell:
    """One RTLIL cell: its type, parameters and port connections (each a list of bits, LSB first)."""

    type: str
    params: dict
    ports: dict


@dataclass
class _Module:
    """What the pricing needs of one RTLIL module: its cells and its processes' assignments."""

    cells: list = field(default_factory=list)
    processes: list = field(default_factory=list)  # each: the right-hand sides, the default first


def _sigspecs(text: str, widths: dict) -> list:
    """The RTLIL signal specs in ``text``, each a list of bits, LSB first: ``(wire, index)`` or a
    constant ``"0"``/``"1"``/``"x"``.

    Amaranth writes a wire with an explicit slice (``\\a [3:0]``, ``$7 [2]``) or whole (``$7``),
    constants as ``<width>'<bits MSB first>`` and concatenations MSB first in braces.
    """
    tokens = text.split()
    pos = 0

    def part():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            parts = []
            while tokens[pos] != "}":
                parts.append(part())
            pos += 1
            return [bit for p in reversed(parts) for bit in p]
        if "'" in tok and tok[0].isdigit():
            return list(reversed(tok.split("'", 1)[1]))
        lo, hi = 0, widths[tok] - 1
        if pos < len(tokens) and tokens[pos].startswith("["):
            bounds = tokens[pos][1:-1].split(":")
            hi, lo = int(bounds[0]), int(bounds[-1])
            pos += 1
        return [(tok, i) for i in range(lo, hi + 1)]

    specs = []
    while pos < len(tokens):
        specs.append(part())
    return specs


def _parse_rtlil(text: str) -> list:
    """The modules of Amaranth's RTLIL output (:func:`amaranth.back.rtlil.convert`), as :class:`_Module`."""
    modules, widths, mod, cell, proc = [], {}, None, None, None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        key = words[0]
        if key == "module":
            mod, widths = _Module(), {}
            modules.append(mod)
        elif key == "wire":
            widths[words[-1]] = int(words[2])
        elif key == "cell":
            cell = _Cell(words[1], {}, {})
        elif key == "parameter" and cell is not None:
            cell.params[words[1][1:]] = words[2]
        elif key == "connect" and cell is not None:
            cell.ports[words[1][1:]], = _sigspecs(line.split(None, 2)[2], widths)
        elif key == "process":
            proc = []
        elif key == "assign" and proc is not None:
            _, rhs = _sigspecs(line.split(None, 1)[1], widths)
            proc.append(rhs)
        elif key == "end" and line.startswith("  end"):  # a cell's or process' end (two spaces in)
            if cell is not None:
                mod.cells.append(cell)
            elif proc is not None:
                mod.processes.append(proc)
            cell = proc = None
    return modules


def _effective(bits) -> int:
    """Bits of a signal that carry information: distinct, non-constant wire bits.

    Sign-extension copies and the constant bits of shifts and zero-extension cost nothing."""
    return max(len({bit for bit in bits if isinstance(bit, tuple)}), 1)


def _is_const(bits) -> bool:
    return all(isinstance(bit, str) for bit in bits)


def _const_value(bits, signed: bool, width: int) -> int:
    """The unsigned value of a constant operand extended to ``width`` bits (Amaranth shortens them)."""
    bits = list(bits) or ["0"]
    bits += [bits[-1] if signed else "0"] * (width - len(bits))
    return sum(1 << i for i, bit in enumerate(bits) if bit == "1")


def bram_count(width: int, depth: int, family: str) -> int:
    """The fewest block RAMs of ``family`` a ``width`` x ``depth`` memory takes (one shape throughout)."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in BRAM_SHAPES[family])


def memory_blocks(width: int, depth: int, family: str, *, written: bool) -> int:
    """Block RAMs of a ``width`` x ``depth`` memory read synchronously: 0 when its bits cost less in
    logic than in blocks (:data:`MEMORY_COST`), as Yosys' ``memory_libmap`` decides."""
    cost = MEMORY_COST.get(family)
    if cost is None:
        return 0
    blocks = bram_count(width, depth, family)
    return blocks if width * depth * cost["ram_bit" if written else "rom_bit"] > cost["block"] * blocks else 0


#: RTLIL cell type -> the priced kind of Amaranth's operators (docs above).
_CARRY_CELLS = {"$add", "$sub", "$neg", "$lt", "$le", "$gt", "$ge"}
_LOGIC_CELLS = {"$and", "$or", "$xor", "$not", "$reduce_or", "$reduce_and", "$reduce_xor"}
_SHIFT_CELLS = {"$shl", "$shr", "$sshr"}


class _Pricer:
    """Walks the RTLIL modules and adds up the costs (see the module docstring)."""

    def __init__(self, family: str, use_dsp: bool):
        self.family, self.use_dsp = family, use_dsp
        self.lut = Counter()
        self.ff = 0
        self.bram = 0
        self.multipliers = []  # (a, b, LUT4 in logic) of every product Yosys could put on a DSP

    def price(self, modules):
        for mod in modules:
            self._module(mod)

    def _module(self, mod):
        sync_read = {c.params["MEMID"] for c in mod.cells
                     if c.type == "$memrd_v2" and c.params["CLK_ENABLE"] == "1"}
        written = {c.params["MEMID"] for c in mod.cells if c.type == "$memwr_v2"}
        # Cells Amaranth adds around a variable part-select or a division (not operators of the
        # design, so priced as nothing).
        shift_amounts = [tuple(c.ports["B"]) for c in mod.cells if c.type == "$shift"]
        quotients = [tuple(c.ports["Y"]) for c in mod.cells if c.type in ("$divfloor", "$modfloor")]
        for cell in mod.cells:
            kind = cell.type
            if kind in ("$dff", "$adff"):
                self.ff += int(cell.params["WIDTH"])
            elif kind == "$meminit_v2":
                self._memory(cell, cell.params["MEMID"] in sync_read, cell.params["MEMID"] in written)
            elif kind == "$mul" and tuple(cell.ports["Y"]) in shift_amounts:
                continue
            elif kind == "$mux" and tuple(cell.ports["B"]) in quotients:
                continue
            elif kind.startswith("$"):
                self._operator(cell)
        for rhs in mod.processes:
            # one conditional assignment is a flip-flop enable; each further one a mux level
            self.lut["mux"] += _effective(rhs[0]) * max(len(rhs) - 2, 0)

    def _operator(self, cell):
        kind = cell.type
        ins = [cell.ports[p] for p in ("S", "B", "A") if p in cell.ports] if kind == "$mux" else \
              [cell.ports[p] for p in ("A", "B") if p in cell.ports]
        if not ins or all(_is_const(v) for v in ins):
            return
        widths = [_effective(v) for v in ins]
        if kind == "$mul":
            self._multiply(cell, ins, widths)
        elif kind in _CARRY_CELLS:
            self.lut["arith"] += max(widths) if len(ins) == 2 else widths[0]
        elif kind in ("$eq", "$ne"):
            self.lut["compare"] += math.ceil(max(widths) / 2)
        elif kind == "$mux":
            if _is_const(ins[1]) or _is_const(ins[2]):  # a gate per bit, merged with its neighbours
                self.lut["logic"] += math.ceil(max(widths[1:]) / 3)
            else:
                self.lut["mux"] += max(widths[1:])
        elif kind in _SHIFT_CELLS:
            if not _is_const(ins[1]):
                stages = max(widths[1], 1)
                self.lut["shift"] += math.ceil(widths[0] * stages / 2)
        elif kind in _LOGIC_CELLS:
            self.lut["logic"] += math.ceil(max(widths) / 3)

    def _multiply(self, cell, ins, widths):
        a, b = widths
        if _is_const(ins[0]) or _is_const(ins[1]):
            port = "A" if _is_const(ins[0]) else "B"
            const = _const_value(cell.ports[port], cell.params[f"{port}_SIGNED"] == "1",
                                 int(cell.params["Y_WIDTH"]))
            other = b if _is_const(ins[0]) else a
            ones = bin(abs(const)).count("1")
            if ones > 1:  # not a power of two: shift-and-add in logic, or a DSP like any product
                self.multipliers.append((other, const.bit_length(), (ones - 1) * other))
            return
        self.multipliers.append((a, b, a * b + a + b))  # partial products and the final adder

    def _memory(self, init, sync, written):
        width, depth = int(init.params["WIDTH"]), int(init.params["WORDS"])
        bits = width * depth
        blocks = memory_blocks(width, depth, self.family, written=written) if sync else 0
        if blocks:
            self.bram += blocks
            return
        if self.family == "ecp5" or "1" in init.ports["DATA"]:  # LUT ROM, or ECP5 distributed RAM
            self.lut["rom"] += math.ceil(bits / 16)
        else:  # a small iCE40 RAM: one flip-flop per bit
            self.ff += bits

    def place_multipliers(self, dsp_capacity: int) -> int:
        """Put multipliers on DSPs (all or none, as the flow does); return DSPs used."""
        tiles = 0
        on_dsp = [False] * len(self.multipliers)
        if self.use_dsp and self.family in DSP_TILE:
            ta, tb, min_y = DSP_TILE[self.family]
            for i, (a, b, _) in enumerate(self.multipliers):
                if a >= 2 and b >= 2 and a + b >= min_y:
                    tiles += math.ceil(a / ta) * math.ceil(b / tb)
                    on_dsp[i] = True
        if tiles > dsp_capacity:  # the synthesis flow then runs again without DSPs
            tiles, on_dsp = 0, [False] * len(self.multipliers)
        for (_, _, luts), dsp in zip(self.multipliers, on_dsp, strict=True):
            if not dsp:
                self.lut["multiply"] += luts
        return tiles


def estimate_design(component, board: str, *, use_dsp: bool | None = None) -> dict:
    """LUT4, flip-flops, block RAMs and DSPs of ``component`` on ``board`` (no tool is run).

    ``use_dsp`` defaults to what the board's synthesis options do (``-dsp`` on iCE40; ECP5 maps
    multipliers to DSPs unless ``-nodsp``).
    """
    spec = get_board(board)
    if use_dsp is None:
        use_dsp = spec.family == "ecp5" or "-dsp" in spec.synth_opts
    pricer = _Pricer(spec.family, use_dsp)
    text = rtlil.convert(component, name="top", emit_src=False, ports=top_ports(component))
    pricer.price(_parse_rtlil(text))
    dsp = pricer.place_multipliers(spec.capacity.get("dsp", 0))
    figures = estimate_from_kinds(pricer.lut, pricer.ff, spec.family, capacity=spec.capacity.get("logic"))
    out = {
        "lut4": figures["lut4"],
        "ff": pricer.ff,
        "bram": pricer.bram,
        "dsp": dsp,
        "lut4_by_kind": dict(sorted(pricer.lut.items())),
    }
    out.update({k: figures[k] for k in ("logic_cells", "fmax_mhz") if k in figures})
    return out


def estimate_from_kinds(lut4_by_kind: dict, ff: int, family: str, *, capacity: int | None = None,
                        lut_weights: dict | None = None) -> dict:
    """LUT4 (``lut4``, and unrounded ``lut4_raw``), logic cells and Fmax from the priced LUT4 per kind
    and the flip-flops (what :func:`estimate_design` adds up); ``capacity``: the device's logic cells
    (for the Fmax; default the family's board). ``lut_weights``: other weights than :data:`LUT_WEIGHTS`."""
    weights = lut_weights or LUT_WEIGHTS.get(family, dict.fromkeys(KINDS, 1.0))
    lut4 = sum(n * weights[kind] for kind, n in lut4_by_kind.items())
    out = {"lut4_raw": lut4, "lut4": round(lut4)}
    if family in LC_WEIGHTS:
        out["logic_cells"] = logic_cells(lut4, ff, family)
        if family in FMAX_MODEL:
            if capacity is None:
                from hw.eda.boards import BOARDS

                capacity = next(b.capacity["logic"] for b in BOARDS.values() if b.family == family)
            out["fmax_mhz"] = estimate_fmax(out["logic_cells"], capacity, family)
    return out


def logic_cells(lut4: float, ff: int, family: str) -> int:
    """Logic cells of ``lut4`` estimated LUT4 and ``ff`` flip-flops (:data:`LC_WEIGHTS`)."""
    w = LC_WEIGHTS[family]
    return round(w["lut4"] * lut4 + w["ff"] * ff)


def estimate_fmax(cells: int, capacity: int, family: str) -> float | None:
    """Estimated Fmax (MHz) of a design of ``cells`` logic cells on a device of ``capacity``
    (:data:`FMAX_MODEL`; None for a family without a model)."""
    model = FMAX_MODEL.get(family)
    if model is None:
        return None
    use = min(cells / capacity, 1.0)
    return round(1e3 / (model["base_ns"] + model["per_use_ns"] * use), 1)


def estimate_accelerator(plan, board: str, *, link_fifo_bytes: int = 0) -> dict:
    """The estimate of ``asq_accel`` for ``plan`` (a :class:`hw.rtl.plan.NetPlan`) on ``board``.

    ``link_fifo_bytes``: the board link's input buffer (``--window``: images in flight), a byte FIFO
    beside ``asq_accel`` whose memory holds one byte less (Amaranth's ``SyncFIFOBuffered`` keeps the
    last in its output register); its block RAMs are counted in ``bram``.
    """
    from hw.rtl.accel import AsqAccel

    top = AsqAccel(plan)
    out = estimate_design(top, board)
    if link_fifo_bytes > 1:
        out["bram"] += memory_blocks(8, link_fifo_bytes - 1, get_board(board).family, written=True)
    out["cycles_per_inference"] = top.cycles_per_inference()
    out["cycles_mac_bound"] = sum(la.items for la in plan.layers)
    out["macs_per_cycle"] = plan.pe * plan.simd
    return out


def _within(family: str | None, key: str) -> str:
    err = ESTIMATE_ERROR.get(family, {}).get(key) if family else None
    return f" (+-{100 * err:.0f} %)" if err is not None else ""


def format_estimate(est: dict, family: str | None = None) -> str:
    """One line for ``asqhw verilog`` / ``asqhw synth``; with ``family``, each figure's largest error on
    the calibration designs (:data:`ESTIMATE_ERROR`) beside it."""
    cells = f"{est['logic_cells']} logic cells{_within(family, 'logic_cells')}, " if "logic_cells" in est else ""
    fmax = f", Fmax ~{est['fmax_mhz']:g} MHz{_within(family, 'fmax_mhz')}" if est.get("fmax_mhz") else ""
    return (f"estimate: {cells}{est['lut4']} LUT4{_within(family, 'lut4')}, {est['ff']} FF, {est['bram']} BRAM, "
            f"{est['dsp']} DSP{fmax}; "
            f"{est.get('cycles_per_inference', '?')} cycles/inference "
            f"(MAC-bound {est.get('cycles_mac_bound', '?')})")


#: Kinds that share one calibration weight: carry-chain arithmetic, multipliers, steering logic.
WEIGHT_GROUPS = {"arith": "carry", "compare": "carry", "multiply": "multiply", "shift": "steer", "mux": "steer",
                 "logic": "steer", "rom": "steer"}


def calibrate(samples) -> dict:
    """Fit :data:`LUT_WEIGHTS` for one family.

    ``samples``: (lut4_by_kind, measured LUT4) or (lut4_by_kind, measured LUT4, importance). One
    weight per group of :data:`WEIGHT_GROUPS` (three numbers, so a handful of designs determine
    them), by non-negative least squares on the relative error, each design counted ``importance``
    times (default 1).
    """
    import numpy as np
    from scipy.optimize import nnls

    groups = sorted(set(WEIGHT_GROUPS.values()))
    imp = np.sqrt([s[2] if len(s) > 2 else 1.0 for s in samples])
    a = np.array([[sum(n for k, n in s[0].items() if WEIGHT_GROUPS[k] == g) / s[1] for g in groups]
                  for s in samples], dtype=float) * imp[:, None]
    w, _ = nnls(a, imp)
    by_group = dict(zip(groups, (round(float(x), 3) for x in w), strict=True))
    return {k: by_group[WEIGHT_GROUPS[k]] for k in KINDS}


def calibrate_logic_cells(samples) -> dict:
    """Fit :data:`LC_WEIGHTS` for one family: ``samples`` are (estimated LUT4, estimated FF, measured
    logic cells); non-negative least squares on the relative error."""
    import numpy as np
    from scipy.optimize import nnls

    a = np.array([[lut / lc, ff / lc] for lut, ff, lc in samples], dtype=float)
    w, _ = nnls(a, np.ones(len(samples)))
    return {"lut4": round(float(w[0]), 3), "ff": round(float(w[1]), 3)}


def calibrate_fmax(samples) -> dict:
    """Fit :data:`FMAX_MODEL` for one family: ``samples`` are (logic-cell use 0..1, measured Fmax MHz);
    least squares on the period."""
    import numpy as np

    use = np.array([u for u, _ in samples], dtype=float)
    period = np.array([1e3 / f for _, f in samples], dtype=float)
    if np.ptp(use) >= MIN_USE_SPREAD:
        slope, base = np.polyfit(use, period, 1)
        if slope > 0:
            return {"base_ns": round(float(base), 2), "per_use_ns": round(float(slope), 2)}
    # the samples tell no slope (too close in use, or a fuller design was not slower): a constant period
    return {"base_ns": round(float(period.mean()), 2), "per_use_ns": 0.0}


#: :func:`calibrate_fmax` fits a slope in the device's use only when the samples' use spans this much.
MIN_USE_SPREAD = 0.10


def estimate_lines(bundle, *, pe, simd, mul=None, bits=None, boards=("icebreaker", "ulx3s")) -> str:
    """What ``asqhw verilog`` prints: the estimate on each board, beside the board's capacity."""
    from golden.model import load_bundle
    from hw.rtl.plan import make_plan

    if not hasattr(bundle, "manifest"):
        bundle = load_bundle(bundle, vectors=False)
    plan = make_plan(bundle, bits=bits, pe=pe, simd=simd, mul=mul)
    lines = []
    for name in boards:
        spec = get_board(name)
        est = estimate_accelerator(plan, name)
        cap = spec.capacity
        lines.append(f"{name} ({spec.device}) {format_estimate(est, spec.family)}; device: {cap['logic']} logic "
                     f"cells, {cap['lut4']} LUT4, "
                     f"{cap['bram']} BRAM, {cap['dsp']} DSP")
    return "\n".join(lines)
