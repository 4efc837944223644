"""Does ASQ's step adapt? A diagnosis of the adapter's training and an LSQ-against-ASQ comparison.

Three commands, each resumable (a finished run is read back from its JSON and not retrained):

``diagnose``
    Trains 2- and 3-bit ASQ (uniform weights) on ``digits`` and ``digits-vary`` under each training
    variant of ``VARIANTS`` and records, per epoch and per ASQ layer, what ``AdapterProbe``
    measures: the adapter's gradient norm, how far its first Linear moved, which hidden units
    fire, and the spread of beta over the test images. Writes ``build/asq-adapt/diagnosis.json``.
``compare``
    fp32, then LSQ and ASQ, each with uniform and POST weights, at 2, 3 and 4 bits, over 5 seeds, on
    ``digits`` and ``digits-vary``; each seed's float model is trained once and every quantized run
    of that seed and data set starts from it. Writes ``build/asq-adapt/comparison.json`` after
    every run, so a partial sweep is usable.
``report``
    Regenerates the figures and the generated blocks of ``docs/asq-adaptation.md`` and
    ``docs/results.md`` from the two JSON files (whatever they hold so far).

Run with one thread, niced: ``nice -n 15 python -m studies.asq_adapt compare``.
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asqhw.atomic import atomic_write_text
from quant.checkpoint import read_checkpoint
from quant.data import digits_vary_split
from quant.quantizers import DEFAULT_ADAPTER_INIT, DEFAULT_STEP_GRAD_SCALE, ASQActivation
from quant.train import (
    CHECKPOINT_NAME,
    DEFAULT_ADAPTER_LR_SCALE,
    DEFAULT_ADAPTER_WEIGHT_DECAY,
    RECIPES,
    TrainConfig,
    run_training,
)

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "asq-adapt"
DOCS = ROOT / "docs"
DATASETS = ("digits", "digits-vary")
BITS = (2, 3, 4)
SEEDS = (0, 1, 2, 3, 4)
# scheme -> (activation, weights) as the tables name them
SCHEMES = {"lsq": ("LSQ", "uniform"), "lsq+post": ("LSQ", "POST"), "asq": ("ASQ", "uniform"),
           "asq+post": ("ASQ", "POST")}
# beta is read at this resolution when counting distinct values (the hardware's beta LSB).
BETA_RESOLUTION = 1024
QAT_EPOCHS, QAT_LR, _ = RECIPES["digits"]["qat"]
FP_EPOCHS, _, _ = RECIPES["digits"]["fp"]
# The comparison's QAT epochs: twice the recipe's, which sizes the 130-run sweep to about an hour on
# one shared core (10-35 s a run, measured) and gives the adapters longer to learn.
COMPARE_EPOCHS = 2 * QAT_EPOCHS

# Training variants of the diagnosis: (adapter init, step gradient scale, adapter lr scale, adapter wd).
CURRENT = {"adapter_init": "shrunk", "step_grad_scale": "batch", "adapter_lr_scale": 1.0, "adapter_weight_decay": 1e-4}
VARIANTS = {
    "current": CURRENT,
    "paper-init": {**CURRENT, "adapter_init": "paper"},
    "adapter-lr": {**CURRENT, "adapter_lr_scale": 10.0, "adapter_weight_decay": 0.0},
    "g-sample": {**CURRENT, "step_grad_scale": "sample"},
    "all": {"adapter_init": "paper", "step_grad_scale": "sample", "adapter_lr_scale": 10.0,
            "adapter_weight_decay": 0.0},
}
# (scheme, variant) of every diagnosis run: ASQ under each variant, LSQ under the two that touch it.
DIAGNOSIS_RUNS = [("asq", variant) for variant in VARIANTS] + [("lsq", "current"), ("lsq", "g-sample")]
DEFAULTS = {"adapter_init": DEFAULT_ADAPTER_INIT, "step_grad_scale": DEFAULT_STEP_GRAD_SCALE,
            "adapter_lr_scale": DEFAULT_ADAPTER_LR_SCALE, "adapter_weight_decay": DEFAULT_ADAPTER_WEIGHT_DECAY}


def beta_stats(beta: np.ndarray) -> dict:
    """Spread of one layer's per-image beta: distinct values at ``1/BETA_RESOLUTION``,
    ``(max - min) / median``, standard deviation and median."""
    median = float(np.median(beta))
    return {
        "distinct": int(np.unique(np.floor(beta * BETA_RESOLUTION + 0.5)).size),
        "spread": float((beta.max() - beta.min()) / median) if median > 0 else math.inf,
        "std": float(beta.std()),
        "median": median,
    }


class AdapterProbe:
    """Observes the ASQ layers of a training run (``quant.train.run_training``'s ``probe``).

    Per epoch and per ASQ layer (named by its quantized layer, ``conv2``): the mean over the epoch's
    steps of the adapter's gradient L2 norm (all its parameters) and of its first Linear's weight
    gradient norm; how far the first Linear's weight moved from its value at the first step
    (relative L2); and on the test set, the spread of beta (``beta_stats``) and the fraction of the
    hidden units that fire on at least one test image. ``betas`` keeps the last epoch's per-image
    beta. With ``gradients=False`` only the test-set measures are taken.
    """

    def __init__(self, gradients: bool = True):
        self.gradients = gradients
        self.layers = None
        self.epochs = []
        self.betas = {}
        self._sums = {}
        self._start = {}

    def attach(self, model) -> None:
        """Find the ASQ layers; with ``gradients``, hook their adapters' parameters."""
        self.layers = {name.removesuffix(".act_quant"): m for name, m in model.named_modules()
                       if isinstance(m, ASQActivation)}
        self._start = {name: m.adapter[0].weight.detach().clone() for name, m in self.layers.items()}
        self._sums = {name: [0.0, 0.0, 0] for name in self.layers}
        if self.gradients:
            for name, m in self.layers.items():
                parameters = list(m.adapter.parameters())
                step = {"squares": 0.0, "seen": 0, "first": 0.0}
                for parameter in parameters:
                    parameter.register_post_accumulate_grad_hook(
                        self._gradient_hook(name, step, len(parameters), parameter is m.adapter[0].weight))

    def _gradient_hook(self, name: str, step: dict, count: int, is_first: bool):
        # Called once per parameter per backward pass; the layer's step closes with its last parameter.
        @torch.no_grad()
        def hook(parameter):
            squares = float(parameter.grad.pow(2).sum())
            step["squares"] += squares
            step["first"] += math.sqrt(squares) if is_first else 0.0
            step["seen"] += 1
            if step["seen"] == count:
                sums = self._sums[name]
                sums[0] += math.sqrt(step["squares"])
                sums[1] += step["first"]
                sums[2] += 1
                step.update(squares=0.0, seen=0, first=0.0)
        return hook

    @torch.no_grad()
    def after_epoch(self, model, epoch: int, test_loader) -> None:
        captured = {name: [] for name in self.layers}

        def hook_for(name):
            def hook(module, args):
                x = args[0]
                z = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
                captured[name].append((module.beta(x), z))
            return hook

        handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in self.layers.items()]
        model.eval()
        try:
            for x, _ in test_loader:
                model(x)
        finally:
            for handle in handles:
                handle.remove()
        record = {"epoch": epoch + 1, "layers": {}}
        for name, m in self.layers.items():
            beta = torch.cat([b for b, _ in captured[name]]).double().numpy()
            z = torch.cat([z for _, z in captured[name]])
            first = m.adapter[0]
            hidden = torch.relu(first(z)) if len(m.adapter) > 2 else None
            sums = self._sums[name]
            entry = {
                **beta_stats(beta),
                "first_moved": float((first.weight - self._start[name]).norm() / self._start[name].norm()),
                "live_hidden": float((hidden > 0).any(dim=0).double().mean()) if hidden is not None else 1.0,
            }
            if self.gradients and sums[2]:
                entry["grad_norm"] = sums[0] / sums[2]
                entry["first_grad_norm"] = sums[1] / sums[2]
            record["layers"][name] = entry
            self.betas[name] = beta
            self._sums[name] = [0.0, 0.0, 0]
        self.epochs.append(record)


# ---------------------------------------------------------------- runs


def run_folder(data: str, seed: int, name: str) -> Path:
    """Where one run of the study writes its checkpoint: ``build/asq-adapt/runs/DATA/seedS/NAME``."""
    return BUILD / "runs" / data / f"seed{seed}" / name


def float_start(data: str, seed: int, fp_epochs: int) -> tuple[Path, dict]:
    """Train (once) the float model of ``data`` and ``seed``; return its checkpoint and test metrics."""
    out = run_folder(data, seed, f"fp-e{fp_epochs}")
    path = out / CHECKPOINT_NAME
    if path.is_file():
        payload = read_checkpoint(path)
        if payload.get("complete"):
            return path, payload["metrics"]
    # The study's run folders are its scratch space: a killed run there is started over (force), on the
    # thread count main() set (threads=None).
    config = TrainConfig(model="digits", scheme="fp", bits=None, out=out, seed=seed, data=data, epochs=fp_epochs,
                         force=True, threads=None)
    _, metrics = run_training(config)
    return path, metrics


def quant_run(data: str, seed: int, scheme: str, bits: int, settings: dict, init: Path, out: Path,
              epochs: int, probe: AdapterProbe | None) -> dict:
    config = TrainConfig(model="digits", scheme=scheme, bits=bits, out=out, seed=seed, data=data, init=str(init),
                         epochs=epochs, force=True, threads=None, **settings)
    _, metrics = run_training(config, probe=probe)
    return metrics


class Results:
    """A JSON file of finished runs keyed by name, rewritten after every run."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        meta = json.loads(json.dumps(meta))  # as it reads back (tuples become lists)
        self.data = json.loads(path.read_text()) if path.is_file() else {"meta": meta, "runs": {}}
        if self.data.get("meta") != meta:
            raise SystemExit(f"{path} was measured with {self.data.get('meta')}, not {meta}: move it away first")

    def __contains__(self, key: str) -> bool:
        return key in self.data["runs"]

    def add(self, key: str, record: dict) -> None:
        self.data["runs"][key] = record
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def diagnose(args) -> None:
    meta = {"qat_epochs": args.epochs, "fp_epochs": args.fp_epochs, "lr": QAT_LR, "seeds": list(args.seeds),
            "bits": list(args.bits), "variants": VARIANTS, "runs": DIAGNOSIS_RUNS}
    results = Results(BUILD / "diagnosis.json", meta)
    plan = [(data, seed, bits, scheme, variant) for seed in args.seeds for data in DATASETS for bits in args.bits
            for scheme, variant in DIAGNOSIS_RUNS]
    for index, (data, seed, bits, scheme, variant) in enumerate(plan, 1):
        key = f"{data}/seed{seed}/{scheme}/b{bits}/{variant}"
        if key in results:
            continue
        started = time.perf_counter()
        init, _ = float_start(data, seed, args.fp_epochs)
        probe = AdapterProbe()
        out = run_folder(data, seed, f"diag-{scheme}-b{bits}-{variant}")
        metrics = quant_run(data, seed, scheme, bits, VARIANTS[variant], init, out, args.epochs, probe)
        results.add(key, {"data": data, "seed": seed, "bits": bits, "scheme": scheme, "variant": variant,
                          "top1": metrics["top1"], "epochs": probe.epochs})
        _log(f"[{index}/{len(plan)}] {key}: top-1 {metrics['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")


def compare(args) -> None:
    meta = {"qat_epochs": args.epochs, "fp_epochs": args.fp_epochs, "lr": QAT_LR, "settings": DEFAULTS}
    results = Results(BUILD / "comparison.json", meta)
    plan = [(data, seed, scheme, bits) for seed in args.seeds for data in DATASETS
            for scheme, bits in [("fp", None)] + [(s, b) for b in args.bits for s in SCHEMES]]
    for index, (data, seed, scheme, bits) in enumerate(plan, 1):
        key = f"{data}/seed{seed}/{scheme}" + ("" if bits is None else f"/b{bits}")
        if key in results:
            continue
        started = time.perf_counter()
        init, fp_metrics = float_start(data, seed, args.fp_epochs)
        record = {"data": data, "seed": seed, "scheme": scheme, "bits": bits}
        if scheme == "fp":
            record["top1"] = fp_metrics["top1"]
        else:
            probe = AdapterProbe(gradients=False) if scheme.startswith("asq") else None
            out = run_folder(data, seed, f"{scheme}-b{bits}-e{args.epochs}")
            metrics = quant_run(data, seed, scheme, bits, {}, init, out, args.epochs, probe)
            record["top1"] = metrics["top1"]
            if probe is not None:
                record["beta"] = probe.epochs[-1]["layers"]
                if seed == SEEDS[0]:
                    record["betas"] = {name: [round(float(b), 5) for b in beta] for name, beta in probe.betas.items()}
        results.add(key, record)
        _log(f"[{index}/{len(plan)}] {key}: top-1 {record['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")


# ---------------------------------------------------------------- report


def _mean_std(values: list[float], wanted: int) -> str:
    if not values:
        return "-"
    text = f"{statistics.mean(values):.2f}"
    text += f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return text + ("" if len(values) == wanted else f" (n={len(values)})")


def replace_block(path: Path, name: str, body: str) -> None:
    """Replace (or append) the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def diagnosis_figure(diag: dict, data: str, bits: int, seed: int, path: Path) -> bool:
    runs = {r["variant"]: r for r in diag["runs"].values()
            if r["data"] == data and r["bits"] == bits and r["seed"] == seed and r["scheme"] == "asq"}
    if not runs:
        return False
    plt = _plt()
    layers = list(next(iter(runs.values()))["epochs"][0]["layers"])
    columns = [("grad_norm", "adapter gradient norm (mean per step)", True),
               ("first_moved", "first Linear: relative change", True),
               ("spread", "beta (max - min) / median, test set", True),
               ("std", "beta std, test set", True)]
    fig, axes = plt.subplots(len(layers), len(columns), figsize=(4.2 * len(columns), 3.2 * len(layers)),
                             squeeze=False)
    for row, layer in enumerate(layers):
        for col, (key, title, log) in enumerate(columns):
            ax = axes[row][col]
            for number, (variant, run) in enumerate(runs.items()):
                xs = [e["epoch"] for e in run["epochs"]]
                ys = [max(e["layers"][layer].get(key, float("nan")), 1e-9) for e in run["epochs"]]
                # dashed and dotted lines keep a variant visible where it lies on another one
                ax.plot(xs, ys, label=variant, linestyle=("-", "--", ":", "-.")[number % 4])
            ax.set_title(f"{layer}: {title}", fontsize=9)
            ax.set_xlabel("epoch")
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"ASQ {bits}-bit (uniform weights) on {data}, seed {seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


@torch.no_grad()
def shrink_factors(data: str, seed: int, bits: int, fp_epochs: int) -> dict:
    """Per ASQ layer, the factor ``adapter_init="shrunk"`` applies to the adapter's last weight at the
    first batch of a run (1.0: the paper's init already keeps every ``|beta - 1| <= 2e-3``)."""
    from quant.data import make_loaders
    from quant.models import build_model
    from quant.quantize import calibrate, quantize_model

    torch.manual_seed(seed)  # as run_training does before building the model
    model = build_model("digits", data=data)
    model.load_state_dict(read_checkpoint(float_start(data, seed, fp_epochs)[0])["state_dict"])
    quantize_model(model, "asq", bits)
    layers = {n.removesuffix(".act_quant"): m for n, m in model.named_modules() if isinstance(m, ASQActivation)}
    drawn = {n: m.adapter[-2].weight.clone() for n, m in layers.items()}
    for m in layers.values():
        m.adapter_init = "shrunk"
    train_loader, _ = make_loaders("digits", data, RECIPES["digits"]["qat"][2], seed=seed)
    train_loader.set_epoch(0)
    calibrate(model, next(iter(train_loader))[0])
    return {n: float(m.adapter[-2].weight.norm() / drawn[n].norm()) for n, m in layers.items()}


def shrink_table(diag: dict) -> str:
    meta = diag["meta"]
    rows = ["| data | bits | seed | conv2 shrink factor | conv3 shrink factor |", "|---|---|---|---|---|"]
    for data in DATASETS:
        for bits in meta["bits"]:
            for seed in meta["seeds"]:
                factors = shrink_factors(data, seed, bits, meta["fp_epochs"])
                rows.append(f"| {data} | {bits} | {seed} | " + " | ".join(f"{factors[n]:.3g}" for n in factors) + " |")
    return "\n".join(rows)


def diagnosis_table(diag: dict) -> str:
    seeds = diag["meta"]["seeds"]
    rows = ["| data | bits | scheme | variant | top-1 (%) | " + " | ".join(
        f"{layer} {what}" for layer in ("conv2", "conv3")
        for what in ("beta spread", "distinct beta", "first Linear moved", "live hidden")) + " |",
            "|---|---|---|---|---|" + "---|" * 8]
    for data in DATASETS:
        for bits in diag["meta"]["bits"]:
            for scheme, variant in DIAGNOSIS_RUNS:
                runs = [r for r in diag["runs"].values() if r["data"] == data and r["bits"] == bits
                        and r["scheme"] == scheme and r["variant"] == variant]
                if not runs:
                    continue
                cells = [_mean_std([r["top1"] for r in runs], len(seeds))]
                for layer in ("conv2", "conv3") if scheme == "asq" else ():
                    last = [r["epochs"][-1]["layers"][layer] for r in runs]
                    cells += [f"{100 * statistics.mean(e['spread'] for e in last):.1f} %",
                              f"{statistics.mean(e['distinct'] for e in last):.0f}",
                              f"{100 * statistics.mean(e['first_moved'] for e in last):.1f} %",
                              f"{100 * statistics.mean(e['live_hidden'] for e in last):.0f} %"]
                cells += ["" for _ in range(8 + 1 - len(cells))]
                rows.append(f"| {data} | {bits} | {SCHEMES[scheme][0]} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def comparison_tables(comp: dict) -> tuple[str, str]:
    runs = list(comp["runs"].values())

    def top1(data, scheme, bits):
        return [r["top1"] for r in runs if r["data"] == data and r["scheme"] == scheme and r["bits"] == bits]

    def mean_or_none(values):
        return statistics.mean(values) if values else None

    head = ("| data | bits | fp32 | LSQ, uniform w | LSQ, POST w | ASQ, uniform w | ASQ, POST w "
            "| ASQ - LSQ, uniform w | ASQ - LSQ, POST w |")
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    for data in DATASETS:
        fp = top1(data, "fp", None)
        for bits in BITS:
            cells = [_mean_std(fp, len(SEEDS))] + [_mean_std(top1(data, s, bits), len(SEEDS)) for s in SCHEMES]
            for asq, lsq in (("asq", "lsq"), ("asq+post", "lsq+post")):
                # paired by seed: both runs start from the same float model
                a = {r["seed"]: r["top1"] for r in runs if r["data"] == data and r["scheme"] == asq
                     and r["bits"] == bits}
                b = {r["seed"]: r["top1"] for r in runs if r["data"] == data and r["scheme"] == lsq
                     and r["bits"] == bits}
                diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
                cells.append(_mean_std(diffs, len(SEEDS)))
            rows.append(f"| {data} | {bits} | " + " | ".join(cells) + " |")
    spread = ["| data | bits | weights | conv2 beta (max - min) / median | conv2 distinct beta | conv2 median beta "
              "| conv3 beta (max - min) / median | conv3 distinct beta | conv3 median beta |",
              "|---|---|---|---|---|---|---|---|---|"]
    for data in DATASETS:
        for bits in BITS:
            for scheme in ("asq", "asq+post"):
                found = [r["beta"] for r in runs if r["data"] == data and r["scheme"] == scheme
                         and r["bits"] == bits and "beta" in r]
                if not found:
                    continue
                cells = []
                for layer in ("conv2", "conv3"):
                    cells += [f"{100 * statistics.median(f[layer]['spread'] for f in found):.1f} %",
                              f"{statistics.median(f[layer]['distinct'] for f in found):.0f}",
                              f"{statistics.median(f[layer]['median'] for f in found):.2f}"]
                spread.append(f"| {data} | {bits} | {SCHEMES[scheme][1]} | " + " | ".join(cells) + " |")
    return "\n".join(rows), "\n".join(spread)


@torch.no_grad()
def gain_response(checkpoint: Path) -> dict:
    """How each ASQ layer's input and beta follow the exposure on the digits-vary test images.

    Per layer: the mean of the layer's input (its GAP averaged over channels) and the median beta,
    over the darkest tenth of the images (lowest gain) and over the brightest tenth, and their ratios
    bright / dark. An adapter that fully followed the input would give a beta ratio equal to the
    input ratio.
    """
    from quant.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    _, _, x, _, exposure = digits_vary_split(with_exposure=True)
    gain = exposure["gain"]
    dark, bright = gain <= np.quantile(gain, 0.1), gain >= np.quantile(gain, 0.9)
    seen = {}
    layers = {n.removesuffix(".act_quant"): m for n, m in model.named_modules() if isinstance(m, ASQActivation)}
    handles = [m.register_forward_pre_hook(lambda module, args, name=name: seen.__setitem__(
        name, (args[0].mean(dim=tuple(range(1, args[0].dim()))).numpy(), module.beta(args[0]).numpy())))
        for name, m in layers.items()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for name, (level, beta) in seen.items():
        result[name] = {"input_dark": float(level[dark].mean()), "input_bright": float(level[bright].mean()),
                        "beta_dark": float(np.median(beta[dark])), "beta_bright": float(np.median(beta[bright]))}
    return result


def gain_response_table(comp: dict) -> tuple[str, list[dict]]:
    responses = []
    rows = ["| bits | weights | layer | input mean, darkest 10 % | input mean, brightest 10 % | input ratio "
            "| beta, darkest 10 % | beta, brightest 10 % | beta ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for bits in BITS:
        for scheme in ("asq", "asq+post"):
            key = f"digits-vary/seed{SEEDS[0]}/{scheme}/b{bits}"
            if key not in comp["runs"]:
                continue
            path = run_folder("digits-vary", SEEDS[0], f"{scheme}-b{bits}-e{comp['meta']['qat_epochs']}")
            if not (path / CHECKPOINT_NAME).is_file():
                continue
            for layer, r in gain_response(path / CHECKPOINT_NAME).items():
                responses.append({"bits": bits, "scheme": scheme, "layer": layer, **r})
                input_ratio, beta_ratio = r["input_bright"] / r["input_dark"], r["beta_bright"] / r["beta_dark"]
                rows.append(f"| {bits} | {SCHEMES[scheme][1]} | {layer} | {r['input_dark']:.3f} | "
                            f"{r['input_bright']:.3f} | {input_ratio:.2f} | "
                            f"{r['beta_dark']:.3f} | {r['beta_bright']:.3f} | {beta_ratio:.2f} |")
    return "\n".join(rows), responses


def paired_gains(comp: dict, data: str, bits: int) -> dict:
    """ASQ minus LSQ top-1 per weight kind, paired by seed: ``{weights: [differences]}``."""
    runs = comp["runs"]
    gains = {}
    for asq, lsq in (("asq", "lsq"), ("asq+post", "lsq+post")):
        pairs = [(f"{data}/seed{s}/{asq}/b{bits}", f"{data}/seed{s}/{lsq}/b{bits}") for s in SEEDS]
        gains[SCHEMES[asq][1]] = [runs[a]["top1"] - runs[b]["top1"] for a, b in pairs if a in runs and b in runs]
    return gains


def verdict(comp: dict, responses: list[dict]) -> str:
    """The goal (ASQ >= LSQ + 1 point at 2 and 3 bits on digits-vary), answered from the measurements."""
    lines = []
    met = []
    for bits in (2, 3):
        for weights, diffs in paired_gains(comp, "digits-vary", bits).items():
            if not diffs:
                continue
            mean = statistics.mean(diffs)
            sd = f"± {statistics.stdev(diffs):.2f} " if len(diffs) > 1 else ""
            met.append(mean >= 1.0)
            lines.append(f"{bits} bits, {weights} weights: {mean:+.2f} points ({sd}over {len(diffs)} "
                         f"seed{'s' if len(diffs) > 1 else ''}, {'met' if mean >= 1.0 else 'not met'})")
    if not lines:
        return ""
    text = ["Goal: ASQ ahead of LSQ by at least 1 point at 2 and 3 bits on digits-vary. Measured (ASQ - LSQ, "
            "paired by seed): " + "; ".join(lines) + "."]
    if responses and not all(met):
        def median_ratio(layer, what):
            values = [r[f"{what}_bright"] / r[f"{what}_dark"] for r in responses if r["layer"] == layer]
            return statistics.median(values) if values else float("nan")

        gain = digits_vary_split(with_exposure=True)[4]["gain"]
        dark, bright = gain <= np.quantile(gain, 0.1), gain >= np.quantile(gain, 0.9)
        gain_ratio = gain[bright].mean() / gain[dark].mean()
        text.append(
            f"Why not: between the darkest and the brightest tenth of the test images the gain differs by "
            f"{gain_ratio:.1f}x, but little of it reaches the ASQ layers: conv2's input differs by "
            f"{median_ratio('conv2', 'input'):.2f}x, conv3's by {median_ratio('conv3', 'input'):.2f}x (median over "
            "the rows above). The black level and the contrast curve do not scale the image, and the first "
            "layer, linear in the image, is followed by a BatchNorm whose fixed per-channel shift does not scale "
            "with the exposure; the second BatchNorm does the same again before conv3. "
            f"conv2's beta does follow its input ({median_ratio('conv2', 'beta'):.2f}x), conv3's has nothing to "
            "follow; a fixed LSQ step covers a range of input scale this small nearly as well, so the adapter has "
            "little to correct.")
    return "\n\n".join(text)


def beta_gain_figure(comp: dict, path: Path) -> bool:
    found = [r for r in comp["runs"].values() if r["data"] == "digits-vary" and "betas" in r
             and r["scheme"] == "asq"]
    if not found:
        return False
    exposure = digits_vary_split(with_exposure=True)[4]
    plt = _plt()
    found.sort(key=lambda r: r["bits"])
    layers = list(found[0]["betas"])
    fig, axes = plt.subplots(1, len(found), figsize=(4.5 * len(found), 3.6), squeeze=False)
    for ax, run in zip(axes[0], found, strict=True):
        for layer in layers:
            ax.scatter(exposure["gain"], run["betas"][layer], s=6, alpha=0.6, label=layer)
        ax.set_xscale("log")
        ax.set_xlabel("input gain (exposure)")
        ax.set_ylabel("beta")
        ax.set_title(f"ASQ {run['bits']}-bit, uniform weights, seed {run['seed']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("digits-vary test images: each ASQ layer's beta against the image's gain")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def report(args) -> None:
    diag_path, comp_path = BUILD / "diagnosis.json", BUILD / "comparison.json"
    if diag_path.is_file():
        diag = json.loads(diag_path.read_text())
        figures = []
        for data in DATASETS:
            for bits in diag["meta"]["bits"]:
                name = f"asq-adaptation-{data}-b{bits}.png"
                if diagnosis_figure(diag, data, bits, diag["meta"]["seeds"][0], DOCS / name):
                    figures.append(f"![ASQ {bits}-bit on {data}]({name})")
        meta = diag["meta"]
        body = (f"Measured by `python -m studies.asq_adapt diagnose` then `report` ({meta['qat_epochs']} QAT "
                f"epochs from a {meta['fp_epochs']}-epoch float model, lr {meta['lr']}, seeds "
                f"{', '.join(map(str, meta['seeds']))}; ASQ with uniform weights). Last-epoch values, mean over "
                "the seeds; beta spread and live hidden units on the 360 test images.\n\n"
                + diagnosis_table(diag) + "\n\nThe shrunk init's factor on the adapter's last weight at the first "
                "batch of each run (1 = untouched, the paper's init already within 2e-3 of 1):\n\n"
                + shrink_table(diag) + "\n\nVariants: " + "; ".join(
                    f"`{name}`: init {v['adapter_init']}, g per {v['step_grad_scale']}, adapter lr x"
                    f"{v['adapter_lr_scale']:g}, adapter weight decay {v['adapter_weight_decay']:g}"
                    for name, v in VARIANTS.items()) + ".\n\nFigures: seed "
                f"{meta['seeds'][0]}, one line per variant; a curve on the bottom of a log axis (1e-9) is zero: every "
                "hidden unit of that adapter is dead and beta is one constant.\n\n" + "\n\n".join(figures))
        replace_block(DOCS / "asq-adaptation.md", "asq-diagnosis", body)
    if comp_path.is_file():
        comp = json.loads(comp_path.read_text())
        accuracy, spread = comparison_tables(comp)
        response_rows, responses = gain_response_table(comp)
        plotted = beta_gain_figure(comp, DOCS / "results-asq-beta-gain.png")
        meta = comp["meta"]
        s = meta["settings"]
        done = len(comp["runs"])
        planned = len(DATASETS) * len(SEEDS) * (1 + len(BITS) * len(SCHEMES))
        body = "\n".join([
            "## ASQ against LSQ where inputs vary",
            "",
            "Generated by `python -m studies.asq_adapt compare` then `python -m studies.asq_adapt report` "
            f"({done} of {planned} runs measured; a cell with n < 5 is missing seeds). Hand edits are overwritten.",
            "",
            f"- Recipe: the digits model; float pre-training {meta['fp_epochs']} epochs (lr 0.05) once per seed "
            f"and data set, then every quantized run from it for {meta['qat_epochs']} epochs, lr {meta['lr']}, "
            "batch 64, SGD momentum 0.9, weight decay 1e-4, cosine lr; seeds "
            f"{', '.join(map(str, SEEDS))}; first and last layers 8-bit LSQ, the middle two (conv2, conv3) at BITS.",
            f"- ASQ settings: adapter init `{s['adapter_init']}`, step gradient scale per `{s['step_grad_scale']}`, "
            f"adapter lr x{s['adapter_lr_scale']:g}, adapter weight decay {s['adapter_weight_decay']:g} "
            "(docs/asq-adaptation.md).",
            "- Data: `digits` is sklearn's digits, stratified split with seed 0, 360 test images; `digits-vary` is "
            "the same images and split, each with its own gain, contrast and black level (quant/data.py "
            "`digits_vary_split`, docs/asq-adaptation.md).",
            "- Top-1 on the test images, mean ± sample std over the seeds; ASQ - LSQ is paired by seed (same float "
            "start).",
            "",
            accuracy,
            "",
            "Spread of beta over the test images (median over the seeds):",
            "",
            spread,
            "",
            "![beta against the input's gain](results-asq-beta-gain.png)" if plotted else "",
            "",
            f"How far the exposure reaches the ASQ layers (digits-vary, seed {SEEDS[0]}; the test images split by "
            "gain, which spans 10x): the mean of each ASQ layer's input and the median beta over the darkest and "
            "the brightest tenth. A beta ratio equal to the input ratio would mean the step follows the input "
            "fully.",
            "",
            response_rows,
            "",
            verdict(comp, responses),
        ])
        replace_block(DOCS / "results.md", "asq-comparison", body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("diagnose", "compare", "report"))
    parser.add_argument("--epochs", type=int,
                        help=f"QAT epochs (default: diagnose {QAT_EPOCHS}, the recipe's; compare {COMPARE_EPOCHS})")
    parser.add_argument("--fp-epochs", type=int, default=FP_EPOCHS, help=f"float epochs (default {FP_EPOCHS})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = COMPARE_EPOCHS if args.command == "compare" else QAT_EPOCHS
    torch.set_num_threads(args.threads)
    {"diagnose": diagnose, "compare": compare, "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
