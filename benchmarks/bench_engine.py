"""The descriptor-driven engine on trained ResNet-20: Verilator seconds per image, cycles against the MAC bound.

Runs the first ``--images`` test images of each ``--models`` graph bundle (default the shipped
ResNet-20 at 3 and 4 bits: digits at 32x32x3, NOT CIFAR-10) through its engine at ``--pe`` on Verilator,
under the plain Verilog testbench (``sim/engine_tb.v``, LFSR stalls on both streams). Each run must be
bit-exact against ``golden.graph.run_graph`` or the benchmark fails.

Writes ``benchmarks/results/engine.json``: per bundle the Verilator seconds per image (simulation
only; the build apart), the cycles per image measured (with stalls) and by the engine's schedule
(an estimate, without stalls), the MAC bound (MACs / PE: PE multiply-accumulates every cycle) and their ratio, and the
schedule's cycles against the bound at other PEs (no simulation).

Usage: ``python benchmarks/bench_engine.py [--models models/resnet20-digits32-b3 ...] [--images 8] [--pe 4]``
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

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results" / "engine.json"
DEFAULT_MODELS = [ROOT / "models" / f"resnet20-digits32-b{bits}" for bits in (3, 4)]
#: PEs at which the schedule's cycles are set against the MAC bound (computed, not simulated).
PE_SWEEP = (1, 2, 4, 8, 16)


def _shown(path) -> str:
    """The bundle's path relative to the repository when it lies inside it (results do not name a checkout)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _bundle_figures(path: Path, images: int, pe: int) -> dict:
    from golden.bundle import read_bundle
    from hw.eda.generate import estimate_engine
    from sim.engine_tb import run_graph_bundle

    bundle = read_bundle(path)
    started = time.perf_counter()
    summary = run_graph_bundle(bundle, images=images, pe=pe, progress=True)
    total = time.perf_counter() - started
    if not summary["passed"]:
        raise SystemExit(f"bench_engine: {path} is not bit-exact on Verilator:\n{summary['report']}")
    sweep = {}
    for p in PE_SWEEP:
        figures = estimate_engine(bundle, pe=p)
        sweep[str(p)] = {k: figures[k] for k in ("cycles_per_inference", "mac_bound_cycles", "mac_efficiency")}
    return {
        "bundle": _shown(path), "model": bundle.manifest.model, "bits": bundle.manifest.bits, "pe": pe,
        "images": summary["images"], "s_per_image": summary["s_per_image"], "sim_wall_s": summary["wall_s"],
        "build_s": summary["build_s"], "total_wall_s": total, "stalls": summary["stall"],
        "cycles_per_image": summary["cycles_per_image"], "cycles_per_image_schedule": summary["cycles_model"],
        "macs": summary["macs"], "mac_bound_cycles": summary["mac_bound_cycles"],
        "mac_efficiency": summary["mac_bound_cycles"] / summary["cycles_model"],
        "cycles_per_s": summary["cycles_per_s"], "rtl_accuracy": summary["rtl_accuracy"],
        "golden_accuracy": summary["golden_accuracy"], "pe_sweep": sweep,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--pe", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv if argv is not None else [])
    runs = [_bundle_figures(path, args.images, args.pe) for path in args.models]
    result = {
        "benchmark": "graph engine on trained ResNet-20 (digits at 32x32x3, NOT CIFAR-10), Verilator, plain "
                     "Verilog testbench with LFSR stalls",
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "python": platform.python_version()},
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    for r in runs:
        print(f"{r['model']} b{r['bits']} PE={r['pe']}: {r['s_per_image']:.1f} s/image on Verilator, "
              f"{r['cycles_per_image']:.0f} cycles/image with stalls ({r['cycles_per_image_schedule']} by the "
              f"schedule estimate), "
              f"MAC bound {r['mac_bound_cycles']} ({100 * r['mac_efficiency']:.1f} %) -> {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
