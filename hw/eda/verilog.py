"""Turn an Amaranth component into a Verilog file, atomically."""

from pathlib import Path

from amaranth.back import verilog

from asqhw.atomic import atomic_write_text
from asqhw.toolchain import apply_env


def write_verilog(component, path, *, name: str, keep_if_unchanged: bool = False) -> Path:
    """Convert ``component`` to Verilog with top module ``name`` and write it to ``path``.

    Ports are the component's signature (flattened as ``<member>__<field>``) plus ``clk`` and
    ``rst`` when it has synchronous logic. Uses Amaranth's pinned builtin Yosys. With
    ``keep_if_unchanged`` an identical existing file keeps its timestamp (no simulator rebuild).
    """
    apply_env()
    text = verilog.convert(component, name=name, emit_src=False)
    return atomic_write_text(path, text, keep_if_unchanged=keep_if_unchanged)
