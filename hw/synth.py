"""Synthesis, place and route for open FPGA boards, and the figures read back from nextpnr.

The flow is Amaranth's own (``platform.build``) driven with the YoWASP tools that
:mod:`asqhw.toolchain` points it at; nextpnr writes a machine-readable ``--report`` from which
utilization and Fmax are taken, so no log is scraped.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asqhw.errors import UserError
from asqhw.toolchain import apply_env


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    return ICEBreakerPlatform()


def _ulx3s():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform()


#: Board name -> (platform factory, the nextpnr cell type that counts logic, Yosys synth options).
#: iCE40: `-dsp` lets Yosys use the UP5K's 8 DSPs; ECP5: `-abc9 -nowidelut` maps far smaller.
BOARDS = {
    "icebreaker": (_icebreaker, "ICESTORM_LC", "-dsp"),
    "ulx3s": (_ulx3s, "TRELLIS_COMB", "-abc9 -nowidelut"),
}


@dataclass
class PnrReport:
    """What nextpnr reports for one placed-and-routed design."""

    board: str
    device: str
    logic_cell_type: str
    logic_used: int
    logic_available: int
    utilization: dict = field(default_factory=dict)  # cell type -> {"used", "available"}
    fmax_mhz: dict = field(default_factory=dict)  # clock net -> achieved MHz
    constraint_mhz: dict = field(default_factory=dict)  # clock net -> required MHz

    def to_dict(self) -> dict:
        return asdict(self)


def platform_for(board: str):
    """The amaranth-boards platform object for ``board`` (``icebreaker`` or ``ulx3s``)."""
    try:
        factory = BOARDS[board][0]
    except KeyError:
        raise UserError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}") from None
    return factory()


def read_nextpnr_report(path, *, board: str, device: str) -> PnrReport:
    """Parse nextpnr's ``--report`` JSON into a :class:`PnrReport`."""
    report = json.loads(Path(path).read_text())
    cell = BOARDS[board][1]
    util = {k: {"used": v["used"], "available": v["available"]} for k, v in report["utilization"].items()}
    return PnrReport(
        board=board, device=device, logic_cell_type=cell,
        logic_used=util[cell]["used"], logic_available=util[cell]["available"], utilization=util,
        fmax_mhz={k: v["achieved"] for k, v in report.get("fmax", {}).items()},
        constraint_mhz={k: v["constraint"] for k, v in report.get("fmax", {}).items()},
    )


def place_and_route(top, board: str, build_dir, *, name: str = "top", seed: int = 1,
                    synth_opts: str | None = None) -> PnrReport:
    """Synthesize, place, route and pack ``top`` (an Elaboratable for the board) in ``build_dir``.

    The board's default clock is constrained at its oscillator frequency; the bitstream
    (``{name}.bin`` on iCE40, ``{name}.bit`` on ECP5) and ``{name}.report.json`` land in
    ``build_dir``. Returns the parsed report.
    """
    apply_env()
    platform = platform_for(board)
    opts = BOARDS[board][2] if synth_opts is None else synth_opts
    build_dir = Path(build_dir)
    platform.build(
        top, name=name, build_dir=str(build_dir), do_program=False,
        synth_opts=opts, nextpnr_opts=f"--seed {seed} --report {name}.report.json",
    )
    return read_nextpnr_report(build_dir / f"{name}.report.json", board=board, device=platform.device)
