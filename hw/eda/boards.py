"""The boards (and the one technology-independent target) the synthesis flow knows.

One :class:`Board` row says everything the flow needs about a target: how to build its
amaranth-boards platform, which Yosys synthesis command maps to it (and with which options), which
Yosys cells count as LUT4s, flip-flops, block RAMs and DSPs, which nextpnr cell type counts logic,
the oscillator frequency, and the device's capacity (used to explain a design that does not fit
before nextpnr even starts).

Capacities are the datasheet figures that nextpnr itself reports (``--report`` "available"):
iCE40UP5K 5280 logic cells, 30 ``SB_RAM40_4K``, 8 ``SB_MAC16``; ECP5 LFE5U-85F 83640 LUT4
(``TRELLIS_COMB``), 208 ``DP16KD``, 156 ``MULT18X18D``.
"""

from dataclasses import dataclass, field

from asqhw.errors import UserError


def _icebreaker_platform():
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    return ICEBreakerPlatform()


def _ulx3s_platform():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform()


@dataclass(frozen=True)
class Board:
    """A synthesis target.

    Attributes
    ----------
    name : str
        What ``--board`` takes.
    family : {"ice40", "ecp5", "generic"}
        Yosys ``synth_<family>`` (``synth`` for generic).
    device : str
        Device name as nextpnr reports it (``"generic"`` for the technology-independent target).
    clock_mhz : float or None
        The board oscillator that clocks the design (None: no board, no clock).
    synth_opts : str
        Options for ``synth_<family>``: iCE40 ``-dsp`` lets Yosys use the UP5K's DSPs; ECP5
        ``-abc9 -nowidelut`` maps far smaller (docs/design.md section 3).
    logic_cell : str
        nextpnr cell type counted as "logic cells".
    lut_weights : dict
        Yosys cell type -> LUT4s it holds (ECP5: a ``CCU2C`` carry cell holds two; a 16x4
        ``TRELLIS_DPR16X4`` distributed RAM takes the four LUT4s of two slices).
    ff_prefixes : tuple of str
        Yosys cell types starting with one of these are flip-flops.
    bram_cells, dsp_cells : tuple of str
        Yosys cell types counted as block RAMs / DSPs.
    capacity : dict
        ``"logic"``, ``"lut4"``, ``"bram"``, ``"dsp"`` -> how many the device has.
    platform_factory : callable or None
        Builds the amaranth-boards platform.
    clock_resource : str or None
        The platform resource of the oscillator, which feeds the PLL (:mod:`hw.rtl.clocking`).
    pll_start_mhz : float or None
        Where the PLL search starts when no Fmax estimate is at hand (:mod:`hw.eda.synth`): near what
        the default accelerator reaches (iCE40 about 21-23 MHz over seeds, ECP5 about 45-48 MHz).
    """

    name: str
    family: str
    device: str
    clock_mhz: float | None
    synth_opts: str
    logic_cell: str
    lut_weights: dict = field(default_factory=dict)
    ff_prefixes: tuple = ()
    bram_cells: tuple = ()
    dsp_cells: tuple = ()
    capacity: dict = field(default_factory=dict)
    platform_factory: object = None
    clock_resource: str | None = None
    pll_start_mhz: float | None = None

    def platform(self):
        """A fresh amaranth-boards platform object (raises UserError for the generic target)."""
        if self.platform_factory is None:
            raise UserError(f"board {self.name!r} has no FPGA platform; it is synthesized with Yosys only")
        return self.platform_factory()

    @property
    def is_fpga(self) -> bool:
        return self.platform_factory is not None


BOARDS = {
    "icebreaker": Board(
        name="icebreaker", family="ice40", device="iCE40UP5K", clock_mhz=12.0, synth_opts="-dsp",
        logic_cell="ICESTORM_LC", lut_weights={"SB_LUT4": 1}, ff_prefixes=("SB_DFF",),
        bram_cells=("SB_RAM40_4K",), dsp_cells=("SB_MAC16",),
        capacity={"logic": 5280, "lut4": 5280, "bram": 30, "dsp": 8},
        platform_factory=_icebreaker_platform, clock_resource="clk12", pll_start_mhz=24.0,
    ),
    "ulx3s": Board(
        name="ulx3s", family="ecp5", device="LFE5U-85F", clock_mhz=25.0, synth_opts="-abc9 -nowidelut",
        logic_cell="TRELLIS_COMB", lut_weights={"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
        ff_prefixes=("TRELLIS_FF",),
        bram_cells=("DP16KD",), dsp_cells=("MULT18X18D",),
        capacity={"logic": 83640, "lut4": 83640, "bram": 208, "dsp": 156},
        platform_factory=_ulx3s_platform, clock_resource="clk25", pll_start_mhz=45.0,
    ),
    "generic": Board(
        name="generic", family="generic", device="generic", clock_mhz=None, synth_opts="",
        logic_cell="", ff_prefixes=("$_DFF", "$_SDFF", "$_DFFE", "$_SDFFE", "$_SDFFCE", "$_ALDFF", "$_DLATCH"),
    ),
}

#: What the MAC comparison synthesizes for (boards with an FPGA).
FPGA_BOARDS = ("icebreaker", "ulx3s")


def get_board(name: str) -> Board:
    """The :class:`Board` called ``name``; UserError naming the choices otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UserError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)}") from None
