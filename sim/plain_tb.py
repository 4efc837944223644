"""The plain Verilog testbench (``sim/tb_asq_accel.v``) on Icarus: no cocotb, no simulator pokes.

It checks the generated ``asq_accel.v`` as a user's own testbench would: the handshake of
docs/hardware.md (transfers at rising edges with valid and ready, none in reset), every output
beat, under IEEE 1364 (``-g2005``) or 1800 (``-g2012``) semantics.
"""

import subprocess
from pathlib import Path

import numpy as np

from asqhw.toolchain import ICARUS_FIX, require

TESTBENCH = Path(__file__).resolve().parent / "tb_asq_accel.v"
GENERATIONS = ("2005", "2012")


def _hex_lines(values, bits: int) -> str:
    mask = (1 << bits) - 1
    digits = -(-bits // 4)
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in values)


def run_plain_testbench(verilog, codes, logits, classes, out_dir, *, generation: str = "2012",
                        in_bits: int = 8, seed: int = 1) -> str:
    """Run the plain testbench on ``verilog`` over the images ``codes`` (N x codes per image).

    ``logits`` (N x classes) and ``classes`` (N) are the expected outputs. Returns the simulator's
    output; the caller looks for ``PASS``.
    """
    if generation not in GENERATIONS:
        raise ValueError(f"generation {generation!r} is not one of {GENERATIONS}")
    iverilog, vvp = require("iverilog", ICARUS_FIX), require("vvp", ICARUS_FIX)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codes = np.asarray(codes).reshape(len(codes), -1)
    logits = np.asarray(logits).reshape(len(codes), -1)
    beats = np.concatenate([logits, np.asarray(classes).reshape(-1, 1)], axis=1)
    (out_dir / "codes.hex").write_text(_hex_lines(codes.ravel(), in_bits))
    (out_dir / "expect.hex").write_text(_hex_lines(beats.ravel(), 32))
    binary = out_dir / f"tb-{generation}.vvp"
    params = {"N_IMAGES": len(codes), "N_CODES": codes.shape[1], "N_LOGITS": logits.shape[1],
              "IN_BITS": in_bits, "SEED": seed}
    subprocess.run([iverilog, f"-g{generation}", "-o", str(binary), "-s", "tb",
                    *[f"-Ptb.{k}={v}" for k, v in params.items()], str(TESTBENCH), str(verilog)],
                   check=True, capture_output=True, text=True)
    proc = subprocess.run([vvp, "-n", str(binary), f"+codes={out_dir / 'codes.hex'}",
                           f"+expect={out_dir / 'expect.hex'}"], capture_output=True, text=True, timeout=600)
    return proc.stdout + proc.stderr
