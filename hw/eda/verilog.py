"""Turn an Amaranth component into a Verilog file, atomically: the one conversion path."""

from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Const, ValueCastable

from asqhw.atomic import atomic_write_text
from asqhw.toolchain import apply_env


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
    """``component`` as Verilog with top module ``name`` (Amaranth's pinned builtin Yosys)."""
    apply_env()
    return verilog.convert(component, name=name, emit_src=False, ports=top_ports(component))


def write_verilog(component, path, *, name: str, keep_if_unchanged: bool = False) -> Path:
    """Convert ``component`` to Verilog with top module ``name`` and write it to ``path``.

    Ports are the component's signature (flattened as ``<member>__<field>``, constant members
    left out) plus ``clk`` and ``rst`` when it has synchronous logic. With ``keep_if_unchanged`` an
    identical existing file keeps its timestamp (no simulator rebuild).
    """
    return atomic_write_text(path, verilog_text(component, name=name), keep_if_unchanged=keep_if_unchanged)
