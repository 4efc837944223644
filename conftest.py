"""Fixtures shared by the test suites under ``tests/`` and ``sim/``.

- Simulator builds go to a temporary folder of the test session, not to the repository's
  ``build/sim``: each pytest-xdist worker is its own session with its own ``tmp_path_factory``, so
  parallel workers never build into the same folder, while the tests of one worker still share their
  (expensive) Verilator builds.
- The bundles and checkpoints the repository ships under ``models/``, found from this file rather
  than from the working directory.

Test tiers are pytest markers (``pyproject.toml``): ``sim`` (runs Icarus or Verilator), ``synth``
(Yosys / nextpnr), ``train`` (trains a network with ``quant.train``), ``formal`` (Yosys SAT proofs),
``slow`` (more than ~30 s).
``make test-fast`` runs what carries none of them.
"""

from pathlib import Path

import pytest

from golden.bundle import SHIPPED_MODELS


@pytest.fixture(scope="session", autouse=True)
def sim_build_root(tmp_path_factory):
    """The folder simulator builds of this session go to (``sim.runner.BUILD_ROOT`` while it runs).

    Every way into a simulation (``sim.units.run_unit_testbench``, ``sim.accel.run_accel``, the
    ``asqhw sim`` command) reads ``sim.runner.BUILD_ROOT`` when it is called, so pointing it here
    covers them all; ``asqhw sim`` outside the tests keeps ``build/sim``.
    """
    from sim import runner

    root = tmp_path_factory.mktemp("sim")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "BUILD_ROOT", root)
        yield root


@pytest.fixture(scope="session")
def shipped_bundle():
    """``shipped_bundle(bits)``: the folder of the shipped bundle ``models/digits-b<bits>``
    (``shipped_bundle(name)``: ``models/<name>``, e.g. ``digits-vary-b3``)."""
    return lambda key: SHIPPED_MODELS / (key if isinstance(key, str) else f"digits-b{key}")


@pytest.fixture(scope="session")
def shipped_checkpoint():
    """``shipped_checkpoint(bits)``: the checkpoint the shipped ``digits-b<bits>`` was exported from
    (``shipped_checkpoint(name)``: that of ``models/<name>``)."""
    return lambda key: SHIPPED_MODELS / "checkpoints" / f"{key if isinstance(key, str) else f'digits-b{key}'}.pt"


@pytest.fixture(scope="session")
def format1_bundle():
    """The folder of a format-1 bundle (a layer chain), as asqhw wrote them before every export became
    a graph: the digits-b3 bundle once shipped (``tests/data/digits-b3-format1``), read by the
    format-1 reader that users' older bundles still go through. Its chain equals the chain view of
    today's shipped ``models/digits-b3``."""
    return Path(__file__).resolve().parent / "tests" / "data" / "digits-b3-format1"


@pytest.fixture(scope="session")
def load_example():
    """``load_example(name)``: the script ``examples/<name>.py`` imported as a module (the examples
    are not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def one_thread():
    """Restores torch's thread count after a test whose code under test sets one thread (the examples)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
