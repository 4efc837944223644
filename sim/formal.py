"""Formal equivalence: hardware units proved equal to the golden arithmetic for every input.

Simulation checks the vectors it is given; a proof covers them all. Each check builds a *miter*:
the unit as ``hw`` generates it (Amaranth -> RTLIL) beside a reference circuit written from
``golden.arith``, both fed the same inputs, and asks Yosys's SAT solver (``sat -prove``) whether any
input makes their outputs differ. ``-verify`` turns a counterexample into a failure whose inputs
are reported.

The reference is the specification itself, not a second design:

- a multiplier lane is a function of two narrow codes, so its reference is the table of
  ``golden.arith.product`` over every (activation, weight) pair, as a Verilog ``case``; the
  widest lanes (8-bit weights) exceed a practical table and use the defining expression of
  ``golden.arith.int_product``, the signed product ``a * w``;

The requantizer is not proved here: its products are symbolic-by-symbolic (accumulator times beta
code) or symbolic-by-ROM-constant multiplications, and proving two differently built multipliers
equal is beyond a SAT solver at these widths (measured: some single-channel proofs ran for over
five minutes). It is checked by simulation against golden instead (``sim/test_requant.py``).
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from asqhw.errors import UserError
from asqhw.toolchain import PIP_FIX, require, tool_env
from golden import arith, formats

#: Largest ``act_bits + w_bits`` of a lane proved against a full table of golden products.
TABLE_BITS_MAX = 14


class ProofFailed(AssertionError):
    """The SAT solver found an input on which the unit and golden differ (see ``log``)."""

    def __init__(self, what: str, log: str):
        inputs = [ln for ln in log.splitlines() if ln.strip().startswith("\\in_")]
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
