"""Run the whole accelerator (``asq_accel``) on a simulator against the golden model of its bundle.

The Verilog is the one ``asqhw verilog`` writes (:func:`hw.eda.generate.generate_verilog`, same bundle,
same generator parameters); it is copied into the simulator's source folder only when its text
changed, so a repeated run reuses the simulator build. The cocotb side is
:func:`sim.test_accel.accelerator_matches_golden`; it writes a JSON summary (accuracy, cycles,
speed, mismatches) that :func:`run_accel` returns, whether the run passed or not.

Used by the full-network tests (``sim/test_accel.py``), ``asqhw sim`` (``sim/cli.py``) and the
simulation benchmark (``benchmarks/bench_sim.py``).
"""

import json
import sys
import tempfile
from pathlib import Path

from asqhw.atomic import atomic_write_bytes
from asqhw.errors import UserError
from golden.bundle import bundle_folder

#: Default back-pressure: probability of an idle input cycle / a stalled output cycle.
DEFAULT_STALL = 0.2


def default_bundle(bits: int) -> Path:
    """``models/digits-b<bits>``, or :class:`UserError` naming the fix when it is missing."""
    return bundle_folder(None, bits)


def design_name(bits, pe, simd, mul) -> str:
    return f"accel-b{bits}-pe{pe}-simd{simd}-{mul}"


def prepare_design(bundle, *, bits=None, pe=None, simd=None, mul=None, out_root=None) -> dict:
    """Generate the accelerator's Verilog for ``bundle`` into ``out_root/<design>/``.

    Returns ``{"verilog": Path, "params": {...}, "cycles_per_inference": int, "dir": Path}``.
    Parameters left as None take the generator's defaults; ``out_root`` defaults to
    :data:`sim.runner.BUILD_ROOT`, read at call time (the test suite points it at a temporary folder).
    """
    from hw.eda.generate import generate_verilog
    from sim import runner

    kwargs = {k: v for k, v in (("bits", bits), ("pe", pe), ("simd", simd), ("mul", mul)) if v is not None}
    out_root = Path(out_root if out_root is not None else runner.BUILD_ROOT)
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_root) as tmp:
        result = generate_verilog(bundle, out_dir=Path(tmp) / "gen", **kwargs)
        params = result["params"]
        design = out_root / design_name(params["bits"], params["pe"], params["simd"], params["mul"])
        design.mkdir(parents=True, exist_ok=True)
        for path in result["paths"].values():
            atomic_write_bytes(design / Path(path).name, Path(path).read_bytes(), keep_if_unchanged=True)
    return {"verilog": design / "asq_accel.v", "params": params, "dir": design,
            "cycles_per_inference": result["cycles_per_inference"]}


def run_accel(simulator: str, bundle, *, images=None, bits=None, pe=None, simd=None, mul=None, seed: int = 1,
              stall: float = DEFAULT_STALL, waves: bool = False, progress: bool = False,
              verilog=None, build_dir=None, check_layers: bool = True, quiet: bool = False,
              max_cycles=None) -> dict:
    """Simulate ``asq_accel`` of ``bundle`` on ``images`` and compare every logit with golden.

    Parameters
    ----------
    simulator : {"icarus", "verilator"}
    bundle : path-like
        Bundle folder (with ``vectors.npz``).
    images : iterable of int, optional
        Indices into the bundle's test vectors (default: all of them, the whole test split).
    bits, pe, simd, mul : optional
        Generator parameters (default: the bundle's BITS, the generator's defaults); a BITS that
        disagrees with the bundle is refused by the generator.
    seed : int
        Seed of the random stalls.
    stall : float
        Probability of an idle input cycle and of a stalled output cycle.
    waves : bool
        Write a waveform into the build folder (FST on Icarus, VCD on Verilator).
    progress : bool
        Show a tqdm bar over images (from inside the simulation).
    verilog : path-like, optional
        Simulate this Verilog instead of a freshly generated one (the broken-design tests).
    build_dir : path-like, optional
        Default ``<design folder>-<simulator>`` beside the design (under ``build/sim``).
    check_layers : bool
        Also compare every intermediate layer's codes, read from the accelerator's activation
        buffers after each image (a mismatch then names the first layer that differs).
    max_cycles : int, optional
        Watchdog: fail when the images are not all done after this many clock cycles (default:
        twice the generator's cycle count per image, plus margin).
    quiet : bool
        Send the simulator build's output to ``build.log`` in the build folder and keep cocotb's
        log to warnings (failures still print; the summary carries the report).

    Returns
    -------
    dict
        The summary the cocotb side wrote (see ``sim/test_accel.py``) plus ``passed`` and, when
        it failed, ``error``.
    """
    from sim.reference import NetworkReference
    from sim.runner import SimulationFailed, check_simulator, run_cocotb
    from sim.tb import params_env

    check_simulator(simulator)
    if not 0.0 <= stall < 1.0:
        raise UserError(f"stall probability {stall} must be in [0, 1)")
    bundle = Path(bundle)
    ref = NetworkReference(bundle)
    if images is None:
        images = range(ref.n_images)
    images = [int(i) for i in images]
    bad = [i for i in images if not 0 <= i < ref.n_images]
    if bad or not images:
        raise UserError(f"image index {bad[0] if bad else '(none)'} outside 0..{ref.n_images - 1} "
                        f"of {bundle}/vectors.npz; pass --images N with 1 <= N <= {ref.n_images}")
    design = prepare_design(bundle, bits=bits, pe=pe, simd=simd, mul=mul)
    source = Path(verilog) if verilog is not None else design["verilog"]
    build_dir = Path(build_dir) if build_dir else design["dir"].with_name(
        f"{design['dir'].name}-{simulator}{'-waves' if waves else ''}")
    summary_path = build_dir / "summary.json"
    build_dir.mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)
    env = params_env(bundle=str(bundle.resolve()), images=images, seed=seed, stall=stall,
                     summary=str(summary_path), progress=progress, check_layers=check_layers,
                     simulator=simulator, design=design["params"],
                     cycles_model=design["cycles_per_inference"], max_cycles=max_cycles)
    if quiet:
        env.update(COCOTB_LOG_LEVEL="WARNING", GPI_LOG_LEVEL="ERROR")
    if progress:  # the build is silent and, on Verilator, takes a minute or two the first time
        print(f"asqhw sim: building asq_accel for {simulator} in {build_dir} (reused while the Verilog "
              "is unchanged; Verilator's first build takes a minute or two)", file=sys.stderr, flush=True)
    error = None
    try:
        run_cocotb(simulator=simulator, sources=[source], toplevel="asq_accel",
                   test_module="sim.test_accel", build_dir=build_dir, extra_env=env, waves=waves,
                   build_log=build_dir / "build.log" if quiet else None)
    except SimulationFailed as err:
        error = str(err)
    if not summary_path.exists():
        raise SimulationFailed(error or f"{simulator}: the testbench wrote no summary ({summary_path})")
    summary = json.loads(summary_path.read_text())
    summary.update(passed=error is None, error=error, build_dir=str(build_dir),
                   verilog=str(source), waves=_waves_file(build_dir, simulator) if waves else None)
    return summary


def _waves_file(build_dir: Path, simulator: str):
    found = sorted(build_dir.glob("*.fst")) + sorted(build_dir.glob("*.vcd"))
    return str(found[0]) if found else None
