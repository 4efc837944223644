"""The board-level clock: the ``sync`` domain from the board oscillator through the FPGA's PLL.

:class:`PllClocked` wraps a board top (the accelerator behind its link) and defines the ``sync``
domain itself, so the platform does not make its default one from the oscillator:

- iCE40: ``SB_PLL40_PAD`` on the oscillator's pin (the iCEBreaker's 12 MHz is on a PLL pad), SIMPLE
  feedback, its global output as the clock.
- ECP5: ``EHXPLLL`` fed by the oscillator, feedback from CLKOP.

nextpnr derives the PLL output's constraint from the oscillator pin's (the platform constrains that
pin) and the PLL's dividers, so every path of the design is timed in that one domain; the flow checks
the constraint nextpnr reports against the setting (:func:`hw.eda.synth.choose_clock`). (A constraint
on the domain's clock signal itself would name a net that flattening renames.)

Reset is held until the PLL reports lock (synchronised into the new domain) and then for a few
microseconds more: iCE40 block RAMs read as zeros for about 3 us after configuration
(the same delay the iCE40 platform's own default domain waits).
"""

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

#: Reset held this long after the PLL locks (s): the iCE40 platform's power-on delay (5x the ~3 us
#: during which block RAMs read as zeros).
POWER_ON_DELAY_S = 15e-6


class PllClocked(Elaboratable):
    """``inner`` (a board top using the ``sync`` domain) clocked by the PLL ``setting``.

    Parameters
    ----------
    inner : Elaboratable
        The board top; it sees ``sync`` at ``setting.f_out`` MHz.
    setting : hw.eda.pll.PllSetting
        The PLL configuration (family ``"ice40"`` or ``"ecp5"``).
    clock_resource : str
        The platform resource of the oscillator (``"clk12"``, ``"clk25"``).
    """

    def __init__(self, inner, setting, clock_resource: str):
        self.inner = inner
        self.setting = setting
        self.clock_resource = clock_resource

    @property
    def clock_hz(self) -> float:
        return self.setting.f_out * 1e6

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self.inner
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        clk_io = platform.request(self.clock_resource, 0, dir="-")
        pll_clk, lock = cd_sync.clk, Signal()
        if self.setting.family == "ice40":
            m.submodules.pll = self._ice40(clk_io, pll_clk, lock)
        elif self.setting.family == "ecp5":
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
            m.submodules.pll = self._ecp5(clk_buf.i, pll_clk, lock)
        else:
            raise ValueError(f"no PLL for the {self.setting.family!r} family")
        m.d.comb += ClockSignal("por").eq(pll_clk)

        # reset: until the PLL has locked, then the power-on delay (a counter from its configured zero)
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(lock, locked, o_domain="por")
        delay = max(int(POWER_ON_DELAY_S * self.clock_hz), 1)
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~locked):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.comb += ResetSignal("sync").eq(~ready)
        return m

    def _ice40(self, clk_io, pll_clk, lock):
        p = self.setting.params
        return Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
            i_PACKAGEPIN=clk_io.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=pll_clk, o_LOCK=lock,
        )

    def _ecp5(self, clk_in, pll_clk, lock):
        p = self.setting.params
        return Instance(
            "EHXPLLL",
            # the loop-filter settings ecppll and Lattice's tools write for every configuration
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"], p_CLKOP_CPHASE=p["CLKOP_CPHASE"],
            p_CLKOP_FPHASE=p["CLKOP_FPHASE"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKI_DIV=p["CLKI_DIV"],
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in, i_CLKFB=pll_clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=pll_clk, o_LOCK=lock,
        )

