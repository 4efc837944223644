"""Simulation speed of the whole accelerator: Verilator against Icarus, measured in one run.

Runs ``asq_accel`` of the shipped BITS=3 bundle (generator defaults) through the full-network
cocotb testbench, without stalls, on Verilator over the whole digits test split and on Icarus over
the first ``--icarus-images`` images (``--icarus-images 360`` for the whole split; the default
keeps ``make bench`` short), both in this one process, one after the other, so the ratio of their
simulated clock cycles per second is measured under the same machine load. Each run must be
bit-exact against golden (the testbench checks every logit and every layer) or the benchmark fails.

Writes ``benchmarks/results/sim.json``: cycles per second on each simulator and their ratio, wall
time of the simulation loop (and of the whole run, build included) for the images run, and for
Icarus on a subset the wall time the whole split would take at the measured speed (labelled as
extrapolated).

Usage: ``python benchmarks/bench_sim.py [--bits 3] [--icarus-images 24] [--out ...]``
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asqhw.atomic import atomic_write_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sim.json"


def _run(simulator, bundle, images):
    from sim.accel import run_accel

    started = time.perf_counter()
    summary = run_accel(simulator, bundle, images=images, stall=0.0, progress=True)
    total = time.perf_counter() - started
    if not summary["passed"]:
        raise SystemExit(f"bench_sim: {simulator} run is not bit-exact:\n{summary['report']}")
    return {
        "images": summary["images"],
        "cycles_per_image": summary["cycles_per_image"],
        "sim_cycles": summary["sim_cycles"],
        "cycles_per_s": summary["cycles_per_s"],
        "images_per_s": summary["images_per_s"],
        "sim_wall_s": summary["wall_s"],
        "total_wall_s": total,  # generation, (re)build and simulator start included
        "rtl_accuracy": summary["rtl_accuracy"],
        "golden_accuracy": summary["golden_accuracy"],
    }


def main(argv=None) -> dict:
    from sim.accel import default_bundle
    from sim.reference import NetworkReference

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--icarus-images", type=int, default=24)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv if argv is not None else [])
    bundle = default_bundle(args.bits)
    split = NetworkReference(bundle).n_images
    verilator = _run("verilator", bundle, range(split))
    icarus = _run("icarus", bundle, range(min(args.icarus_images, split)))
    if icarus["images"] < split:
        icarus["split_wall_s_extrapolated"] = split / icarus["images_per_s"]
    result = {
        "benchmark": "full-network cocotb simulation of asq_accel, no stalls",
        "bundle": str(bundle), "bits": args.bits, "split_images": split,
        "verilator": verilator, "icarus": icarus,
        "verilator_over_icarus_cycles_per_s": verilator["cycles_per_s"] / icarus["cycles_per_s"],
        "split_wall_s": {"verilator": verilator["sim_wall_s"],
                         "icarus": icarus["sim_wall_s"] if icarus["images"] == split
                         else icarus["split_wall_s_extrapolated"]},
        "split_wall_s_icarus_measured": icarus["images"] == split,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"verilator {verilator['cycles_per_s']:.0f} cycles/s, icarus {icarus['cycles_per_s']:.0f} "
          f"cycles/s: ratio {result['verilator_over_icarus_cycles_per_s']:.1f}; test split "
          f"{verilator['sim_wall_s']:.1f} s on verilator -> {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
