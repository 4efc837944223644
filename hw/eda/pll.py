"""PLL divider settings for the boards' clocks, computed the way the vendor-neutral tools do.

- iCE40 (``SB_PLL40_PAD`` / ``SB_PLL40_CORE``, SIMPLE feedback): the search of IceStorm's ``icepll``.
  ``f_pfd = f_in / (DIVR + 1)`` in 10..133 MHz, ``f_vco = f_pfd * (DIVF + 1)`` in 533..1066 MHz,
  ``f_out = f_vco / 2**DIVQ`` (DIVQ 1..6) in 16..275 MHz; ``FILTER_RANGE`` follows ``f_pfd``.
- ECP5 (``EHXPLLL``, feedback from CLKOP): the search of Project Trellis' ``ecppll``.
  ``f_pfd = f_in / CLKI_DIV`` (3.125..400 MHz), ``f_out = f_pfd * CLKFB_DIV``,
  ``f_vco = f_out * CLKOP_DIV`` in 400..800 MHz; among equal outputs the VCO nearest 600 MHz wins.

:func:`nearest` answers what the tools answer for a requested frequency (the tests hold it to their
published outputs); :func:`fastest_at_most` is what the synthesis flow needs: the fastest setting
whose output does not exceed a frequency the design met.
"""

from dataclasses import asdict, dataclass

from asqhw.errors import UserError

#: iCE40 PLL ranges (MHz), as ``icepll`` checks them.
ICE40_PFD = (10.0, 133.0)
ICE40_VCO = (533.0, 1066.0)
ICE40_OUT = (16.0, 275.0)
#: ECP5 PLL ranges (MHz), as ``ecppll`` checks them.
ECP5_PFD = (3.125, 400.0)
ECP5_VCO = (400.0, 800.0)
ECP5_OUT = (10.0, 400.0)


@dataclass(frozen=True)
class PllSetting:
    """One PLL configuration: its family, input and output (MHz), VCO (MHz) and divider parameters.

    ``params`` are the primitive's parameter names and values (``DIVR``, ``DIVF``, ``DIVQ``,
    ``FILTER_RANGE`` on iCE40; ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``, ``CLKOP_CPHASE`` on ECP5).
    """

    family: str
    f_in: float
    f_out: float
    f_vco: float
    params: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _ice40_filter_range(f_pfd: float) -> int:
    return 1 if f_pfd < 17 else 2 if f_pfd < 26 else 3 if f_pfd < 44 else 4 if f_pfd < 66 else \
        5 if f_pfd < 101 else 6


def ice40_settings(f_in: float):
    """Every SIMPLE-feedback iCE40 setting for input ``f_in`` MHz, in ``icepll``'s search order."""
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not ICE40_PFD[0] <= f_pfd <= ICE40_PFD[1]:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not ICE40_VCO[0] <= f_vco <= ICE40_VCO[1]:
                continue
            for divq in range(1, 7):
                yield PllSetting("ice40", f_in, f_vco / 2 ** divq, f_vco,
                                 {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                  "FILTER_RANGE": _ice40_filter_range(f_pfd)})


def ecp5_settings(f_in: float):
    """Every ECP5 ``EHXPLLL`` setting (CLKOP feedback) for input ``f_in`` MHz, in ``ecppll``'s order."""
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not ECP5_PFD[0] <= f_pfd <= ECP5_PFD[1]:
            continue
        for clkfb in range(1, 81):
            for clkop in range(1, 129):
                f_out = f_pfd * clkfb
                f_vco = f_out * clkop
                if not ECP5_VCO[0] <= f_vco <= ECP5_VCO[1]:
                    continue
                # CLKOP's coarse phase: half an output period in VCO cycles, as Lattice's tools set it
                yield PllSetting("ecp5", f_in, f_out, f_vco,
                                 {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop,
                                  "CLKOP_CPHASE": clkop // 2, "CLKOP_FPHASE": 0})


def _settings(family: str, f_in: float):
    if family == "ice40":
        return ice40_settings(f_in)
    if family == "ecp5":
        return ecp5_settings(f_in)
    raise UserError(f"no PLL model for the {family!r} family")


def _out_range(family):
    return ICE40_OUT if family == "ice40" else ECP5_OUT


def _better(cand: PllSetting, best: PllSetting | None, target: float) -> bool:
    """The tools' tie rules: a strictly nearer output wins; ``ecppll`` then prefers a VCO nearer 600."""
    if best is None:
        return True
    d_cand, d_best = abs(cand.f_out - target), abs(best.f_out - target)
    if d_cand != d_best:
        return d_cand < d_best
    return cand.family == "ecp5" and abs(cand.f_vco - 600) < abs(best.f_vco - 600)


def nearest(family: str, f_in: float, f_out: float) -> PllSetting:
    """The setting whose output is nearest ``f_out`` MHz (what ``icepll -i f_in -o f_out`` or
    ``ecppll -i f_in -o f_out`` prints)."""
    lo, hi = _out_range(family)
    if not lo <= f_out <= hi:
        raise UserError(f"{family} PLL output {f_out} MHz is outside {lo}..{hi} MHz")
    best = None
    for cand in _settings(family, f_in):
        if _better(cand, best, f_out):
            best = cand
    if best is None:
        raise UserError(f"no {family} PLL setting makes {f_out} MHz from {f_in} MHz")
    return best


def fastest_at_most(family: str, f_in: float, f_max: float) -> PllSetting | None:
    """The setting with the highest output not above ``f_max`` MHz (None when even the slowest
    output the PLL makes is above it); among equal outputs, the one :func:`nearest` would pick."""
    lo, hi = _out_range(family)
    best = None
    for cand in _settings(family, f_in):
        if not lo <= cand.f_out <= min(hi, f_max):
            continue
        out, top = round(cand.f_out, 9), None if best is None else round(best.f_out, 9)
        if top is None or out > top or (out == top and _better(cand, best, f_max)):
            best = cand
    return best


def slowest_at_least(family: str, f_in: float, f_min: float) -> PllSetting | None:
    """The setting with the lowest output not below ``f_min`` MHz (None when even the fastest output
    the PLL makes is below it); among equal outputs, the one :func:`nearest` would pick."""
    lo, hi = _out_range(family)
    best = None
    for cand in _settings(family, f_in):
        if not max(lo, f_min) <= cand.f_out <= hi:
            continue
        out, low = round(cand.f_out, 9), None if best is None else round(best.f_out, 9)
        if low is None or out < low or (out == low and _better(cand, best, f_min)):
            best = cand
    return best
