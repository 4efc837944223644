"""POST against its baselines, MAC for MAC: the designs, how each is measured, the table and plot.

Every design is a PE x SIMD MAC array from the same generator (:class:`hw.rtl.mac.MacArray`, the main
engine of ``asq_accel``) at the same BITS for weights and activations, differing only in the
multiplier:

- ``post``: POST with one ``a * sqrt2`` table per activation lane, broadcast to the PE shifters;
- ``post-private``: POST with a private table per MAC (:class:`PrivateTableArray`);
- ``post-2acc``: POST without a table, even/odd exponents summed apart (:class:`TwoAccPostArray`);
- ``pot``: power-of-two weights, a barrel shift;
- ``int``: uniform two's complement weights, multipliers in logic (DSPs disabled);
- ``int-dsp``: the same array with the board's DSPs allowed (``-dsp`` on iCE40, the ECP5 default).

Two measurements per (design, board):

- LUT4, flip-flops, block RAMs and DSPs from Yosys *out of context*: the array is the top module,
  its ports stay ports, so nothing around it is counted and nothing of it is optimised away. LUT4
  per MAC = LUT4 / (PE x SIMD); it includes each PE's adder tree and accumulator, which every kind
  needs (their width differs with the product width).
- Fmax (median and minimum over seeds) from nextpnr on the board, with the array inside
  :class:`MacHarness` (inputs from a shift register fed by one pin, accumulators XOR-reduced into
  registers and one LED), so the timing paths are the array's own.

Accuracy on digits: a model trained with the same recipe and seed for each weight format
(``lsq+post``, ``lsq+pot``, ``lsq``: LSQ activations for all three, so only the weights differ),
its test top-1 from :mod:`quant.train`.

The POST table precision F (``post_frac_bits``) sets the width of every POST product, so of the adder
trees and accumulators. The POST designs are built at the shipped bundle's F for their BITS
(:func:`shipped_frac_bits`); the shared-table design is also measured at every F of
:data:`FRAC_SWEEP` (LUT4 only), beside what each F does to golden's faithfulness to the float model
(:func:`golden_fidelity`: the shipped checkpoint exported at that F), which is the trade-off the
exporter chooses F on.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, io, wiring
from amaranth.lib.wiring import Out

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError
from golden.arith import sqrt2_fixed
from golden.formats import DEFAULT_POST_FRAC_BITS
from hw.eda.boards import FPGA_BOARDS, get_board
from hw.rtl.mac import MacArray
from hw.rtl.mul import MulLane

#: The designs in table order: name -> (multiplier kind, private tables, DSPs allowed).
DESIGNS = {
    "post": ("post", False, False),
    "post-private": ("post", True, False),
    "post-2acc": ("post", "2acc", False),
    "pot": ("pot", False, False),
    "int": ("int", False, False),
    "int-dsp": ("int", False, True),
}
DESIGN_TITLES = {
    "post": "POST, one table per lane",
    "post-private": "POST, private table per MAC",
    "post-2acc": "POST, two sums, sqrt2 per output",
    "pot": "POT",
    "int": "uniform int, logic",
    "int-dsp": "uniform int, DSPs",
}
#: Training scheme whose accuracy stands for each multiplier kind.
SCHEME_OF_KIND = {"post": "lsq+post", "pot": "lsq+pot", "int": "lsq"}
#: Fan-in the accumulators are sized for: conv2/conv3 of the digits net, 3 x 3 x 16.
FAN_IN = 144
#: POST table precisions F at which the shared-table POST array is also measured (LUT4 only).
FRAC_SWEEP = (1, 2, 3, 4, 5, 6)
#: The shipped checkpoints whose golden faithfulness is measured at every F of the sweep.
CHECKPOINTS = Path("models/checkpoints")


#: The shipped bundles whose table precision F the POST arrays are built at.
SHIPPED = Path("models")


def shipped_frac_bits(bits: int) -> int:
    """F of the POST arrays at ``bits``: the shipped ``digits-b<bits>`` bundle's ``post_frac_bits``
    (the F the exporter chose for that checkpoint: the smallest from
    :func:`golden.formats.default_post_frac_bits` up whose bound E is below one code), or that
    starting F where no POST bundle of ``bits`` is shipped."""
    from golden import formats
    from golden.bundle import read_manifest

    folder = SHIPPED / f"digits-b{bits}"
    if (folder / "manifest.json").is_file():
        manifest = read_manifest(folder)
        if "post" in manifest.scheme:
            return manifest.post_frac_bits
    return formats.default_post_frac_bits(bits)


def acc_width_for(array_kind: str, bits: int, frac_bits: int | None = None) -> int:
    """Accumulator width: one product plus ``ceil(log2(FAN_IN))`` guard bits (docs/arithmetic.md).

    ``frac_bits`` None: the exporter's default F at ``bits``.
    """
    from hw.rtl.mul import product_shape

    f = shipped_frac_bits(bits) if frac_bits is None else frac_bits
    return product_shape(array_kind, bits, bits, False, f).width + math.ceil(math.log2(FAN_IN))


class PrivateTableArray(MacArray):
    """:class:`hw.rtl.mac.MacArray` with one POST lane, so one table, per MAC instead of per input.

    Tables that read the same activation in the same cycle are merged by Yosys (the same logic
    cone), so private tables only exist where each PE sees its activation at its own time: here
    the PEs form a systolic row, PE ``p`` receiving the whole input set (activations, its weights,
    ``valid``/``first``/``last``) ``p`` cycles late through registers. PE ``p``'s accumulator
    therefore holds the same sums as in :class:`hw.rtl.mac.MacArray`, ``p`` cycles later; ``done``
    is PE 0's. The delay registers add flip-flops, not LUTs.
    """

    def __init__(self, w_bits, act_bits, *, pe=1, simd=1, acc_width=32, frac_bits=DEFAULT_POST_FRAC_BITS):
        super().__init__("post", w_bits, act_bits, False, pe=pe, simd=simd, acc_width=acc_width,
                         frac_bits=frac_bits)
        for lane in self.lanes:  # the shared lanes MacArray made are replaced by the private ones
            lane._MustUse__silence = True
        self.private = [[MulLane("post", w_bits, act_bits, False, 1, frac_bits) for _ in range(pe)]
                        for _ in range(simd)]

    def _delayed(self, m, value, cycles, name):
        for i in range(cycles):
            reg = Signal.like(value, name=f"{name}_d{i + 1}")
            m.d.sync += reg.eq(value)
            value = reg
        return value

    def elaborate(self, platform):
        m = Module()
        for p in range(self.pe):
            a = self._delayed(m, self.a.as_value(), p, f"a_pe{p}")
            w = self._delayed(m, self.w[p].as_value(), p, f"w_pe{p}")
            ctrl = self._delayed(m, Cat(self.valid, self.first, self.last), p, f"ctrl_pe{p}")
            prods = []
            for s in range(self.simd):
                lane = self.private[s][p]
                m.submodules[f"mul_{p}_{s}"] = lane
                bits = self.act_bits
                m.d.comb += [lane.a.eq(a[s * bits: (s + 1) * bits]),
                             lane.w[0].eq(w[s * self.w_bits: (s + 1) * self.w_bits])]
                prod = Signal(self.prod_shape, name=f"prod_{p}_{s}")
                m.d.sync += prod.eq(lane.p[0])
                prods.append(prod)
            valid1, first1, last1 = Signal(), Signal(), Signal()
            m.d.sync += [valid1.eq(ctrl[0]), first1.eq(ctrl[1]), last1.eq(ctrl[2])]
            if p == 0:
                m.d.sync += self.done.eq(valid1 & last1)
            with m.If(valid1):
                total = sum(prods[1:], prods[0])
                m.d.sync += self.acc[p].eq(Mux(first1, 0, self.acc[p]) + total)
        return m


class TwoAccPostArray(MacArray):
    """POST with no table: even- and odd-exponent products summed apart, ``sqrt2`` once per output.

    The second design of docs/design.md section 2.2. A POST weight ``e`` contributes ``a << (e // 2)``
    to the even sum (``e`` even) or to the odd sum (``e`` odd), both plain shifts of the activation
    with no fractional bits. The output is ``(even << F) + odd * round(sqrt2 * 2^F)``, formed once per output
    channel where the requantizer already multiplies each accumulator by its constant ``M_c``
    (a second constant, ``M_c * sqrt2``, for the odd sum): that combine is shared by all PEs, as the
    requantizer is, so it is not part of the array. It rounds ``sqrt2`` once per output instead of
    once per product, so its sums are not the golden model's (which tabulates ``round(a * sqrt2 *
    2^F)`` per product): it is here for its cost. Ports as :class:`hw.rtl.mac.MacArray` (``acc``: the
    even sums) plus ``acc_odd``: the odd sums, with the same timing.
    """

    def __init__(self, w_bits, act_bits, *, pe=1, simd=1, acc_width=32, frac_bits=DEFAULT_POST_FRAC_BITS):
        super().__init__("post", w_bits, act_bits, False, pe=pe, simd=simd, acc_width=acc_width,
                         frac_bits=frac_bits)
        for lane in self.lanes:  # this array has no table lanes
            lane._MustUse__silence = True
        # MacArray's ports plus acc_odd: the component is made again with the wider signature
        members = dict(self.signature.members)
        for name in members:
            delattr(self, name)
        members["acc_odd"] = Out(data.ArrayLayout(signed(acc_width), pe))
        wiring.Component.__init__(self, members)
        k = (1 << (w_bits - 1)) - 2
        amax = (1 << act_bits) - 1
        self.prod_width = (amax << (k // 2)).bit_length() + 1  # signed a << (e // 2): no fractional bits
        self.part_width = self.prod_width + max(simd - 1, 1).bit_length() + math.ceil(math.log2(FAN_IN))
        self.sqrt2 = sqrt2_fixed(1, frac_bits)  # round(sqrt2 * 2^F), golden's T[1]

    def elaborate(self, platform):
        m = Module()
        mbits = self.w_bits - 1
        valid1, first1, last1 = Signal(), Signal(), Signal()
        m.d.sync += [valid1.eq(self.valid), first1.eq(self.first), last1.eq(self.last)]
        m.d.sync += self.done.eq(valid1 & last1)
        for p in range(self.pe):
            prods, evens = [], []
            for s in range(self.simd):
                code = self.w[p][s]
                mag_code, negative = code[:mbits], code[mbits]
                mag = Mux(mag_code == 0, 0, self.a[s] << ((mag_code - 1)[:mbits] >> 1))
                prod = Signal(signed(self.prod_width), name=f"prod_{p}_{s}")
                even = Signal(name=f"even_{p}_{s}")  # m odd <=> e even
                m.d.sync += [prod.eq(Mux(negative, -mag, mag)), even.eq(mag_code[0])]
                prods.append(prod)
                evens.append(even)
            even_sum = sum(Mux(e, x, 0) for e, x in zip(evens, prods, strict=True))
            odd_sum = sum(Mux(e, 0, x) for e, x in zip(evens, prods, strict=True))
            with m.If(valid1):
                m.d.sync += [self.acc[p].eq(Mux(first1, 0, self.acc[p]) + even_sum),
                             self.acc_odd[p].eq(Mux(first1, 0, self.acc_odd[p]) + odd_sum)]
        return m


def make_array(design: str, bits: int, pe: int, simd: int, frac_bits: int | None = None) -> MacArray:
    """The MAC array of ``design`` at ``bits`` (weights and unsigned activations).

    ``frac_bits``: F of the POST designs (None: the exporter's default at ``bits``); ignored by the
    others.
    """
    if design not in DESIGNS:
        raise UserError(f"design {design!r} unknown; choose one of {', '.join(DESIGNS)}")
    kind, private, _ = DESIGNS[design]
    f = shipped_frac_bits(bits) if frac_bits is None else frac_bits
    acc = acc_width_for(kind, bits, f)
    if private == "2acc":  # its sums hold shifts of the activation only: no fractional bits
        k = (1 << (bits - 1)) - 2
        acc = (((1 << bits) - 1) << (k // 2)).bit_length() + 1 + math.ceil(math.log2(FAN_IN))
        return TwoAccPostArray(bits, bits, pe=pe, simd=simd, acc_width=acc, frac_bits=f)
    if private:
        return PrivateTableArray(bits, bits, pe=pe, simd=simd, acc_width=acc, frac_bits=f)
    return MacArray(kind, bits, bits, False, pe=pe, simd=simd, acc_width=acc, frac_bits=f)


def synth_opts_for(design: str, board: str) -> str:
    """Yosys options: the board's, with DSPs on only for ``int-dsp``."""
    dsp = DESIGNS[design][2]
    family = get_board(board).family
    if family == "ice40":
        return "-dsp" if dsp else ""
    if family == "ecp5":
        return "-abc9 -nowidelut" + ("" if dsp else " -nodsp")
    return ""


class MacHarness(wiring.Component):
    """A MAC array on a board, for timing: all its inputs from one pin, its outputs to one LED.

    A shift register as long as the array's inputs is fed from the UART rx pin; every accumulator
    is XOR-reduced into a register per PE, those into one register that drives LED 0. The paths
    the harness adds are one flip-flop to the next, so the array's own paths set Fmax.
    """

    def __init__(self, array: MacArray):
        self.array = array
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = arr = self.array
        inputs = [arr.valid, arr.first, arr.last, arr.a.as_value(), arr.w.as_value()]
        width = sum(len(v) for v in inputs)
        chain = Signal(width)
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.din = din = io.FFBuffer("i", uart.rx)
        m.submodules.dout = dout = io.FFBuffer("o", platform.request("led", 0, dir="-"))
        m.d.sync += chain.eq((chain << 1) | din.i)
        offset = 0
        for value in inputs:
            m.d.comb += value.eq(chain[offset: offset + len(value)])
            offset += len(value)
        parity = [Signal(name=f"parity_{p}") for p in range(arr.pe)]
        m.d.sync += [parity[p].eq(arr.acc[p].xor()) for p in range(arr.pe)]
        total = Signal()
        m.d.sync += total.eq(_xor_all(parity))
        m.d.comb += dout.o.eq(total)
        return m


def _xor_all(bits):
    out = bits[0]
    for bit in bits[1:]:
        out = out ^ bit
    return out


@dataclass
class Row:
    """One design on one board at one BITS."""

    design: str
    board: str
    bits: int
    pe: int
    simd: int
    lut4: int
    ff: int
    bram: int
    dsp: int
    fmax_median: float | None = None
    fmax_min: float | None = None
    fits: bool = True
    accuracy: float | None = None
    lut4_estimate: int | None = None  # hw.eda.estimate, before synthesis
    seeds: int | None = None  # nextpnr seeds behind the Fmax figures
    gates: int | None = None  # generic target: Yosys gates and NAND2 gate equivalents
    nand2_eq: float | None = None
    frac_bits: int | None = None  # F of a POST design (None for the others)
    sweep: bool = False  # a row of the F sweep (LUT4 only), not of the main table
    flips: int | None = None  # F sweep: golden vs float predictions that differ (digits test split)
    golden_top1: float | None = None  # F sweep: golden top-1 (%) of the shipped checkpoint at this F
    code_bound: float | None = None  # F sweep: largest teacher-forced requantizer bound E (codes)

    @property
    def macs(self) -> int:
        return self.pe * self.simd

    @property
    def lut4_per_mac(self) -> float:
        return self.lut4 / self.macs

    @property
    def nand2_per_mac(self) -> float | None:
        return None if self.nand2_eq is None else self.nand2_eq / self.macs


def measure_luts(design, board, bits, pe, simd, build_dir, frac_bits: int | None = None) -> Row:
    """Out-of-context Yosys synthesis of one design: a :class:`Row` without Fmax.

    ``frac_bits``: F of a POST design (None: the exporter's default at ``bits``).
    """
    from hw.eda.estimate import estimate_design
    from hw.eda.synth import Resources, synth_cells
    from hw.eda.verilog import write_verilog

    build_dir = Path(build_dir)
    f = (shipped_frac_bits(bits) if frac_bits is None else frac_bits) if DESIGNS[design][0] == "post" else None
    verilog = write_verilog(make_array(design, bits, pe, simd, f), build_dir / "mac_array.v", name="mac_array")
    cells = synth_cells(verilog, "mac_array", board, build_dir, synth_opts=synth_opts_for(design, board))
    if board == "generic":
        from hw.eda.synth import generic_summary

        g = generic_summary(cells)
        return Row(design, board, bits, pe, simd, 0, g["flip_flops"], 0, 0, fits=True, gates=g["gates"],
                   nand2_eq=g["nand2_equivalents"], frac_bits=f)
    res = Resources.from_cells(cells, get_board(board))
    est = estimate_design(make_array(design, bits, pe, simd, f), board, use_dsp=DESIGNS[design][2])
    return Row(design, board, bits, pe, simd, res.lut4, res.ff, res.bram, res.dsp, lut4_estimate=est["lut4"],
               frac_bits=f)


def measure_fmax(row: Row, build_dir, seeds: int, progress=None) -> Row:
    """Fill ``row``'s Fmax from nextpnr over ``seeds`` seeds (``fits = False`` if it does not fit)."""
    from hw.eda.synth import fmax_summary, route_seeds

    top = MacHarness(make_array(row.design, row.bits, row.pe, row.simd, row.frac_bits))
    try:
        reports = route_seeds(top, row.board, build_dir, name="harness", seeds=seeds,
                              synth_opts=synth_opts_for(row.design, row.board), progress=progress)
    except UserError:
        row.fits = False
        return row
    summary = fmax_summary(reports)
    row.fmax_median, row.fmax_min, row.seeds = summary["median"], summary["min"], len(reports)
    return row


def accuracy_of(kind: str, bits: int, train_dir, epochs: int | None = None) -> float:
    """Digits test top-1 (%) of the ``SCHEME_OF_KIND[kind]`` model at ``bits``, trained once and cached.

    ``epochs`` shortens the recipe's (None: the recipe's 30); the cache is per epoch count.
    """
    from quant.train import METRICS_NAME, TrainConfig, train

    suffix = "" if epochs is None else f"-e{epochs}"
    out = Path(train_dir) / f"{SCHEME_OF_KIND[kind]}-b{bits}{suffix}"
    metrics = out / METRICS_NAME
    if metrics.exists():
        log = json.loads(metrics.read_text())
        if log["epochs"] and len(log["epochs"]) == log["config"]["epochs"]:
            return float(log["epochs"][-1]["test"]["top1"])
    import torch

    torch.set_num_threads(2)
    # An unfinished run in the study's folder is started over (force), on the 2 threads set above.
    result = train(TrainConfig(model="digits", scheme=SCHEME_OF_KIND[kind], bits=bits, out=out, workers=0,
                               epochs=epochs, force=True, threads=None))
    return float(result["top1"])


def golden_fidelity(bits: int, frac_bits: int, checkpoints=CHECKPOINTS) -> dict | None:
    """Golden against float for the shipped ``digits-b<bits>`` POST checkpoint exported at F = ``frac_bits``.

    Returns ``flips`` (test predictions that differ), ``golden_top1`` (%) and ``code_bound`` (the
    largest teacher-forced requantizer bound E of docs/arithmetic.md section 6 over the stages that
    produce codes: below 1 means that, given the same input, no code moves by more than one), or
    None when there is no such checkpoint (or it is not a POST model).
    """
    path = Path(checkpoints) / f"digits-b{bits}.pt"
    if not path.exists():
        return None
    from quant.checkpoint import load_checkpoint
    from quant.export.build import build_bundle

    model, meta = load_checkpoint(path)
    if "post" not in str(meta.get("scheme")):
        return None
    acc = build_bundle(model, dict(meta), progress=False, post_frac_bits=frac_bits).manifest.accuracy
    bounds = [r["requant_max_bound"] for r in acc["teacher_forced"] if r["requant_output"] == "codes"]
    return {"flips": int(acc["flips"]), "golden_top1": 100.0 * float(acc["golden"]),
            "code_bound": max(bounds, default=0.0)}


def run_frac_sweep(out_dir, *, bits_list=(3, 4), boards=FPGA_BOARDS, pe=4, simd=4, fracs=FRAC_SWEEP,
                   checkpoints=CHECKPOINTS) -> list[Row]:
    """The shared-table POST array at every F of ``fracs`` (LUT4 only), with golden's faithfulness.

    Rows (``sweep=True``) are merged into ``out_dir/rows.json`` as they come.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    fidelity = {}
    rows = []
    jobs = [(b, n, f) for n in bits_list for f in fracs for b in boards]
    for board, bits, f in tqdm(jobs, desc="F sweep", unit="run"):
        if (bits, f) not in fidelity:
            fidelity[bits, f] = golden_fidelity(bits, f, checkpoints)
        row = measure_luts("post", board, bits, pe, simd, out_dir / f"{board}-b{bits}-post-F{f}" / "ooc", f)
        row.sweep = True
        if fidelity[bits, f] is not None:
            row.flips, row.golden_top1, row.code_bound = (fidelity[bits, f][k] for k in
                                                          ("flips", "golden_top1", "code_bound"))
        rows.append(row)
        _save_rows(out_dir, rows)
    return rows


def run_compare(out_dir, *, bits_list=(3, 4), boards=FPGA_BOARDS, designs=tuple(DESIGNS), pe=4, simd=4,
                seeds=3, with_fmax=True, with_accuracy=True, epochs=None, fracs=FRAC_SWEEP) -> list[Row]:
    """Measure every (board, bits, design); rows are also saved to ``out_dir/rows.json`` as they come.

    When the shared-table POST design is among ``designs``, it is also measured at every F of
    ``fracs`` on the FPGA boards (:func:`run_frac_sweep`; empty ``fracs``: no sweep).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    # the generic (ASIC-style) target has no DSPs and no place and route
    jobs = [(b, n, d) for b in boards for n in bits_list for d in designs if not (b == "generic" and DESIGNS[d][2])]
    fpga_jobs = sum(1 for b, _, _ in jobs if b != "generic")
    rows = []
    bar = tqdm(total=len(jobs) + (fpga_jobs * seeds if with_fmax else 0), desc="compare", unit="run")
    for board, bits, design in jobs:
        bar.set_postfix_str(f"{board} b{bits} {design}")
        where = out_dir / f"{board}-b{bits}-{design}"
        row = measure_luts(design, board, bits, pe, simd, where / "ooc")
        bar.update(1)
        if with_fmax and board != "generic":
            row = measure_fmax(row, where / "pnr", seeds, progress=bar)
        rows.append(row)
        _save_rows(out_dir, rows)
    bar.close()
    fpga = tuple(b for b in boards if b != "generic")
    if "post" in designs and fracs and fpga:
        run_frac_sweep(out_dir, bits_list=bits_list, boards=fpga, pe=pe, simd=simd, fracs=fracs)
    if with_accuracy:
        fill_accuracy(rows, out_dir / "train", epochs)
        _save_rows(out_dir, rows)
    elif (out_dir / "rows.json").exists():  # keep the accuracy an earlier run measured
        known = {(r.design, r.bits): r.accuracy for r in load_rows(out_dir / "rows.json") if r.accuracy}
        for row in rows:
            row.accuracy = known.get((row.design, row.bits), row.accuracy)
        _save_rows(out_dir, rows)
    return load_rows(out_dir / "rows.json")


def _key(row) -> tuple:
    """A main-table row replaces the earlier one of its (board, BITS, design), whatever its F; the F
    sweep keeps one row per F."""
    d = row if isinstance(row, dict) else row_dict(row)
    main = (d["board"], d["bits"], d["design"])
    return main + ("F", d.get("frac_bits")) if d.get("sweep") else main


def _save_rows(out_dir: Path, rows: list[Row]) -> None:
    """Merge ``rows`` into ``out_dir/rows.json`` (a run for one board keeps the other boards' rows)."""
    path = out_dir / "rows.json"
    old = json.loads(path.read_text()) if path.exists() else []
    new = {_key(r): row_dict(r) for r in rows}
    merged = [new.pop(_key(r), r) for r in old] + list(new.values())
    atomic_write_text(path, json.dumps(merged, indent=1) + "\n")


def fill_accuracy(rows: list[Row], train_dir, epochs=None) -> None:
    """Set each row's accuracy: its multiplier kind's model (trained once per kind and BITS, cached)."""
    accuracy = {}
    for row in rows:
        key = (DESIGNS[row.design][0], row.bits)
        if key not in accuracy:
            accuracy[key] = accuracy_of(*key, train_dir, epochs)
        row.accuracy = accuracy[key]


def row_dict(row: Row) -> dict:
    from dataclasses import asdict

    return {**asdict(row), "lut4_per_mac": round(row.lut4_per_mac, 2)}


def load_rows(path) -> list[Row]:
    """Rows saved by :func:`run_compare`, their LUT4 estimates redone with today's estimator."""
    from hw.eda.estimate import estimate_design

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; run asqhw compare without --render-only first")
    fields = set(Row.__dataclass_fields__)
    rows = [Row(**{k: v for k, v in d.items() if k in fields}) for d in json.loads(path.read_text())]
    for row in rows:
        if row.board != "generic":
            arr = make_array(row.design, row.bits, row.pe, row.simd, row.frac_bits)
            row.lut4_estimate = estimate_design(arr, row.board, use_dsp=DESIGNS[row.design][2])["lut4"]
    return rows
