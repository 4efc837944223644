"""Training-step cost of the quantizers: ResNet-20, batch 128, 32x32, CPU.

Times one SGD step (forward, backward, update) of the float model and of the LSQ, ASQ and ASQ+POST
4-bit models, interleaving the variants round by round so that machine load hits all of them alike,
and writes the medians and their ratios to fp32 to ``benchmarks/results/quant.json``. The target
is ASQ+POST at most 1.6x fp32; the profile of the ASQ+POST step (top operators by self CPU time) is
written alongside to say what dominates.

Usage: ``python benchmarks/bench_quant.py [--steps 10] [--threads 1] [--out benchmarks/results/quant.json]``
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asqhw.atomic import atomic_write_text  # noqa: E402
from quant.models import build_model  # noqa: E402
from quant.quantize import calibrate, quantize_model  # noqa: E402

VARIANTS = {"fp32": "fp", "lsq": "lsq", "asq": "asq", "asq+post": "asq+post"}
BITS = 4
BATCH = 128
TARGET_RATIO = 1.6


def _make_step(scheme: str, x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model = quantize_model(build_model("resnet20"), scheme, BITS)
    calibrate(model, x)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step() -> float:
        started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    return step


def _profile(step) -> list[dict]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total}
            for e in events[:8]]


def main(argv=None) -> dict:
    """Run the benchmark, write the JSON, return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: ratios stay stable on a shared machine)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quant.json")
    args = parser.parse_args(argv if argv is not None else [])

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (BATCH,), generator=generator)
    steps = {name: _make_step(scheme, x, y) for name, scheme in VARIANTS.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in tqdm(range(args.steps), desc="resnet20 steps", unit="round"):
        for name, step in steps.items():
            times[name].append(step())
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {name: medians[name] / medians["fp32"] for name in medians}
    result = {
        "benchmark": "resnet20 training step (forward + backward + SGD), CPU",
        "batch": BATCH, "input": [3, 32, 32], "bits": BITS, "steps": args.steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "median_seconds": medians, "ratio_to_fp32": ratios,
        "target": {"variant": "asq+post", "max_ratio": TARGET_RATIO, "met": ratios["asq+post"] <= TARGET_RATIO},
        "asq+post_profile": _profile(steps["asq+post"]),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    for name in VARIANTS:
        print(f"{name:>9}: {medians[name] * 1000:8.1f} ms  {ratios[name]:.2f}x fp32")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
