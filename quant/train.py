"""Quantization-aware training and evaluation (the paper's recipe, docs/design.md 1.4).

SGD with momentum 0.9, weight decay 1e-4 and a cosine learning rate without restarts (per step),
starting from a full-precision model; the ASQ adapters' parameters are a group of their own, whose
learning rate and weight decay ``TrainConfig`` can set apart (the adapter init and the step gradient
scale are ``TrainConfig`` settings too; docs/asq-adaptation.md measures them). One code path serves
one CPU, one GPU, several GPUs and several machines: launched by ``torchrun`` (``WORLD_SIZE > 1``)
the model is wrapped in ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs) and each rank
trains on its share of every batch; rank 0 writes the checkpoint and the metrics log.

The full-precision start of a quantized run is ``init``, or a float pre-training run of its own
length (``pretrain_epochs``, ``pretrain_lr``, ``pretrain_batch_size``; default the recipe's "fp";
0 epochs: random initialisation), announced in one line before it starts and cached beside OUT
(``fp_cache_dir``) for later runs with the same settings; a cache with other settings is refused.

A run never replaces a checkpoint it did not write: when OUT already holds one, ``--resume``
continues it and ``--force`` starts over (the old checkpoint is replaced after the first epoch);
without either the run is refused before any work.

Determinism: the same settings give the same weights, bit for bit, on any machine with the same
torch build. Training runs on ``threads`` intra-op CPU threads (default 1), because a reduction
split over a machine-dependent number of threads sums in a machine-dependent order; ``--threads N``
trades that for speed on big models. Data order and augmentation come from ``seed``. (CUDA kernels
are not covered: GPU runs are reproducible per GPU model at best.)
"""

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError
from quant.checkpoint import check_payload, read_checkpoint, save_checkpoint
from quant.data import DIGITS32, DIGITS_VARIANTS, data_label, is_digits32, make_loaders
from quant.models import build_model, check_model_name, dataset_of
from quant.quantize import FLOAT_SCHEME, calibrate, check_scheme, quantize_model
from quant.quantizers import (
    ADAPTER_INITS,
    DEFAULT_ADAPTER_INIT,
    DEFAULT_STEP_GRAD_SCALE,
    STEP_GRAD_SCALES,
    ASQActivation,
    LSQActivation,
    check_bits,
)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
# The ASQ adapters' parameters form their own SGD group: learning rate = lr scale * the run's, and their
# own weight decay. Defaults: the run's (a 10x rate kills the adapters' hidden units and gains accuracy
# only at 2 bits on digits-vary; docs/asq-adaptation.md).
DEFAULT_ADAPTER_LR_SCALE = 1.0
DEFAULT_ADAPTER_WEIGHT_DECAY = WEIGHT_DECAY

# (epochs, lr, batch size) of the quantized run and of the full-precision run it starts from.
# Quantized: the paper's recipe (docs/design.md 1.4); digits is this project's own (a few seconds per run
# on 2 cores). Full precision (the pre-training a quantized run without --init does first; its own
# --pretrain-* options override it): the usual from-scratch recipes (He et al. for CIFAR, torchvision's
# for ImageNet); the paper starts from pretrained models instead. digits32 (the digits images at
# 32x32x3 for the CIFAR networks, not CIFAR-10) is this project's own: 1,437 training images, 5-10 s per
# ResNet-20 epoch on one CPU thread, so float + quantized take about 10-20 minutes.
RECIPES = {
    "digits": {"qat": (30, 0.02, 64), "fp": (40, 0.05, 64)},
    "digits32": {"qat": (40, 0.02, 64), "fp": (60, 0.1, 64)},
    "cifar10": {"qat": (300, 0.04, 128), "fp": (300, 0.1, 128)},
    "imagenet": {"qat": (90, 0.01, 512), "fp": (90, 0.1, 256)},
}
# MobileNet-V2 on ImageNet: batch 256 (paper).
BATCH_OVERRIDES = {"mobilenet_v2": 256}


@dataclass
class TrainConfig:
    """Everything one training run depends on; ``None`` fields take the data set's recipe."""

    model: str
    scheme: str
    bits: int | None
    out: Path
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    data: str | None = None
    init: str | None = None
    resume: bool = False
    force: bool = False
    threads: int | None = 1
    workers: int = 4
    device: str | None = None
    adapter_init: str = DEFAULT_ADAPTER_INIT
    step_grad_scale: str = DEFAULT_STEP_GRAD_SCALE
    adapter_lr_scale: float = DEFAULT_ADAPTER_LR_SCALE
    adapter_weight_decay: float = DEFAULT_ADAPTER_WEIGHT_DECAY
    # The float pre-training a quantized run without --init starts from (None: the recipe's "fp");
    # pretrain_epochs 0: no pre-training, the quantized run starts from random initialisation.
    pretrain_epochs: int | None = None
    pretrain_lr: float | None = None
    pretrain_batch_size: int | None = None

    def resolved(self) -> "TrainConfig":
        """A copy with the recipe's defaults filled in and every value checked."""
        check_model_name(self.model)
        check_scheme(self.scheme)
        bits = None if self.scheme == FLOAT_SCHEME else check_bits(self.bits)
        recipe = RECIPES[recipe_of(self.model, self.data)]
        epochs, lr, batch = recipe["fp" if self.scheme == FLOAT_SCHEME else "qat"]
        batch = BATCH_OVERRIDES.get(self.model, batch)
        config = TrainConfig(**{**asdict(self), "bits": bits, "out": Path(self.out)})
        config.epochs = epochs if self.epochs is None else self.epochs
        config.lr = lr if self.lr is None else self.lr
        config.batch_size = batch if self.batch_size is None else self.batch_size
        _resolve_pretraining(config, recipe["fp"])
        if config.resume and config.force:
            raise UserError("--resume continues the run in --out, --force starts it over: give one of them")
        if config.threads is not None and (isinstance(config.threads, bool) or not isinstance(config.threads, int)
                                           or config.threads < 1):
            raise UserError(f"--threads {config.threads!r} must be a whole number of at least 1")
        if config.epochs < 1:
            raise UserError(f"--epochs {config.epochs} must be at least 1")
        if not config.lr > 0:
            raise UserError(f"--lr {config.lr} must be positive")
        if config.adapter_init not in ADAPTER_INITS:
            raise UserError(f"--adapter-init {config.adapter_init!r} is unknown: use one of {', '.join(ADAPTER_INITS)}")
        if config.step_grad_scale not in STEP_GRAD_SCALES:
            raise UserError(
                f"--step-grad-scale {config.step_grad_scale!r} is unknown: use one of {', '.join(STEP_GRAD_SCALES)}"
            )
        if not config.adapter_lr_scale > 0:
            raise UserError(f"--adapter-lr-scale {config.adapter_lr_scale} must be positive")
        if not config.adapter_weight_decay >= 0:
            raise UserError(f"--adapter-weight-decay {config.adapter_weight_decay} must be >= 0")
        return config

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


PRETRAIN_OPTIONS = ("pretrain_epochs", "pretrain_lr", "pretrain_batch_size")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _resolve_pretraining(config: TrainConfig, fp_recipe: tuple) -> None:
    """Fill and check the float pre-training settings of ``config`` in place (see ``TrainConfig``)."""
    given = [name for name in PRETRAIN_OPTIONS if getattr(config, name) is not None]
    if given and config.scheme == FLOAT_SCHEME:
        raise UserError(f"{_flag(given[0])} sets the float pre-training of a quantized run; a --scheme fp run "
                        "is itself float training: use --epochs, --lr, --batch-size")
    if given and config.init is not None:
        raise UserError(f"{_flag(given[0])} sets the float pre-training, which --init replaces: give one of them")
    if config.scheme == FLOAT_SCHEME or config.init is not None:
        return
    epochs, lr, batch = fp_recipe
    batch = BATCH_OVERRIDES.get(config.model, batch)
    if config.pretrain_epochs is None:
        config.pretrain_epochs = epochs
    if isinstance(config.pretrain_epochs, bool) or not isinstance(config.pretrain_epochs, int) \
            or config.pretrain_epochs < 0:
        raise UserError(f"--pretrain-epochs {config.pretrain_epochs!r} must be a whole number >= 0 "
                        "(0: no pre-training, the quantized run starts from random initialisation)")
    if config.pretrain_epochs == 0:
        extra = [name for name in ("pretrain_lr", "pretrain_batch_size") if getattr(config, name) is not None]
        if extra:
            raise UserError(f"{_flag(extra[0])} sets a float pre-training that --pretrain-epochs 0 skips")
        return
    config.pretrain_lr = lr if config.pretrain_lr is None else config.pretrain_lr
    config.pretrain_batch_size = batch if config.pretrain_batch_size is None else config.pretrain_batch_size
    if not config.pretrain_lr > 0:
        raise UserError(f"--pretrain-lr {config.pretrain_lr} must be positive")
    if config.pretrain_batch_size < 1:
        raise UserError(f"--pretrain-batch-size {config.pretrain_batch_size} must be at least 1")


def recipe_of(model: str, data) -> str:
    """The ``RECIPES`` key of ``model`` trained on ``--data data``: its data set's, or ``digits32``.

    ``UserError`` for ``--data digits32`` with a model that does not take 32x32x3 images.
    """
    dataset = dataset_of(model)
    if is_digits32(data):
        if dataset != "cifar10":
            raise UserError(f"--data {DIGITS32} (the digits images at 32x32x3) is for the CIFAR-10 models "
                            f"(resnet20); {model} takes {dataset} images")
        return DIGITS32
    return dataset


def fp_cache_dir(out: Path, model: str, data: str | None = None) -> Path:
    """Where a quantized run's full-precision starting point is trained and reused.

    A named digits variant (``--data digits-vary``) or ``digits32`` gets its own: ``MODEL-VARIANT-fp``.
    """
    variant = f"-{data}" if (data in DIGITS_VARIANTS and data != "digits") or is_digits32(data) else ""
    return Path(out).parent / f"{model}{variant}-fp"


# ---------------------------------------------------------------- distributed setup


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE > 1``); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, dist.get_world_size() if dist.is_initialized() else 1, device)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None) -> dict:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` over ``loader``.

    ``loader`` yields ``(x, y)`` batches. The model is put in eval mode (and left there). Under
    ``torch.distributed`` the counts of all ranks are summed.
    """
    model.eval()
    device = device or next(model.parameters()).device
    correct1 = correct5 = loss_sum = count = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        count += len(y)
    correct1, correct5, loss_sum, count = _all_reduce_sum([correct1, correct5, loss_sum, count], device)
    if count == 0:
        raise UserError("the evaluation data set is empty")
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}


# ---------------------------------------------------------------- training


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine decay without restarts: ``base_lr * (1 + cos(pi * step / total)) / 2``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / max(1, total_steps)))


def _load_float_weights(model: nn.Module, path) -> None:
    """Load a full-precision start: an asqhw ``fp`` checkpoint or a plain (torchvision) state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--init checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"--init checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if isinstance(payload, dict) and "format" in payload:
        payload = check_payload(payload, path)
        if payload["scheme"] != FLOAT_SCHEME:
            raise UserError(f"--init {path} is a {payload['scheme']} checkpoint: pass a full-precision (fp) one")
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise UserError(f"--init {path} holds no state_dict")
    try:
        model.load_state_dict(payload)
    except RuntimeError as err:
        raise UserError(f"--init {path} does not fit the model: {err}") from err


def _pretraining_config(config: TrainConfig, resume: bool) -> TrainConfig:
    """The float run that ``config`` (a resolved quantized run without ``--init``) starts from."""
    return TrainConfig(
        model=config.model, scheme=FLOAT_SCHEME, bits=None, out=fp_cache_dir(config.out, config.model, config.data),
        epochs=config.pretrain_epochs, lr=config.pretrain_lr, batch_size=config.pretrain_batch_size,
        seed=config.seed, data=config.data, resume=resume, threads=config.threads, workers=config.workers,
        device=config.device,
    )


def _cached_settings(payload: dict) -> tuple:
    saved = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    return tuple(saved.get(key) for key in ("epochs", "lr", "batch_size", "seed"))


def _settings_text(settings: tuple) -> str:
    epochs, lr, batch, seed = settings
    return f"{epochs} epochs, lr {lr:g}, batch {batch}, seed {seed}"


def _prepare_float_start(config: TrainConfig, ctx: Dist) -> str | None:
    """Path of the full-precision checkpoint a quantized run starts from (None: random initialisation).

    ``--init``, or the run's float pre-training (``pretrain_*``), trained in ``fp_cache_dir`` and
    reused by later runs with the same pre-training settings. What happens is said in one line first.
    """
    if config.init is not None:
        return config.init
    label = data_label(dataset_of(config.model), config.data)
    if not config.pretrain_epochs:
        if ctx.is_main:
            print(f"asqhw train: --pretrain-epochs 0: no float pre-training; {config.model} {config.scheme} "
                  f"starts from random initialisation", flush=True)
        return None
    fp_config = _pretraining_config(config, resume=False).resolved()
    cached = fp_config.out / CHECKPOINT_NAME
    wanted = (fp_config.epochs, fp_config.lr, fp_config.batch_size, fp_config.seed)
    payload = read_checkpoint(cached) if cached.is_file() else None
    if payload is not None and _cached_settings(payload) != wanted:
        raise UserError(
            f"{cached} holds a float pre-training with {_settings_text(_cached_settings(payload))}; this run "
            f"asks for {_settings_text(wanted)} (--pretrain-epochs/--pretrain-lr/--pretrain-batch-size/--seed): "
            f"pass --init {cached} to start from it, match its settings, or remove {fp_config.out}"
        )
    if payload is not None and payload.get("complete"):
        if ctx.is_main:
            print(f"asqhw train: reusing the float pre-training of {config.model} on {label} "
                  f"({_settings_text(wanted)}; top-1 {payload.get('metrics', {}).get('top1', float('nan')):.2f} %) "
                  f"from {fp_config.out}", flush=True)
        return str(cached)
    # An unfinished cache with these settings is a killed pre-training: it is continued.
    unfinished = payload is not None
    if ctx.is_main:
        what = "continuing the unfinished" if unfinished else "first"
        print(f"asqhw train: no --init given; {what} float pre-training of {config.model} on {label}: "
              f"{_settings_text(wanted)} (--pretrain-epochs N sets it, 0 skips it), in {fp_config.out}, which "
              f"later runs with the same settings reuse; then {config.scheme} {config.bits}-bit training: "
              f"{config.epochs} epochs, lr {config.lr:g}, batch {config.batch_size}", flush=True)
    train(_pretraining_config(config, resume=unfinished))
    return str(cached)


def check_fresh_start(config: TrainConfig) -> None:
    """Refuse a new run (no ``resume``, no ``force``) into a folder that already holds a checkpoint."""
    path = config.out / CHECKPOINT_NAME
    if config.resume or config.force or not os.path.lexists(path):
        return
    try:
        payload = read_checkpoint(path)
        done, planned = payload.get("epoch"), payload.get("epochs")
        state = (f"a finished run ({done} of {planned} epochs)" if payload.get("complete")
                 else f"an unfinished run ({done} of {planned} epochs)")
    except UserError:
        state = "a file that is not a readable checkpoint"
    raise UserError(f"{path} already holds {state}: pass --resume to continue it or --force to start over "
                    "(replacing it)")


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op torch threads (None: leave the setting); restore it after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _on_terminal() -> bool:
    """Whether tqdm's bars are shown (tqdm writes to stderr and hides itself when that is no terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _write_metrics(path: Path, config: TrainConfig, history: list) -> None:
    log = {"model": config.model, "scheme": config.scheme, "bits": config.bits,
           "data": data_label(dataset_of(config.model), config.data), "config": config.to_json(),
           "epochs": history}
    atomic_write_text(path, json.dumps(log, indent=2) + "\n")


def train(config: TrainConfig) -> dict:
    """Run (or resume) one training run; return the final test metrics. See the module docstring."""
    return run_training(config)[1]


def configure_quantizers(model: nn.Module, config: TrainConfig) -> None:
    """Apply the run's training choices to the activation quantizers (before ``calibrate``)."""
    for module in model.modules():
        if isinstance(module, LSQActivation | ASQActivation):
            module.step_grad_scale = config.step_grad_scale
        if isinstance(module, ASQActivation):
            module.adapter_init = config.adapter_init


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """SGD parameter groups: everything else, then the ASQ adapters' parameters (if any).

    Each group carries ``lr_scale``: the cosine schedule sets its ``lr`` to ``lr_scale`` times the
    run's learning rate.
    """
    adapter, other = [], []
    for name, parameter in model.named_parameters():
        (adapter if ".adapter." in f".{name}" else other).append(parameter)
    groups = [{"params": other, "weight_decay": WEIGHT_DECAY, "lr_scale": 1.0}]
    if adapter:
        groups.append({"params": adapter, "weight_decay": config.adapter_weight_decay,
                       "lr_scale": config.adapter_lr_scale})
    return groups


def run_training(config: TrainConfig, probe=None) -> tuple[nn.Module, dict]:
    """``train``, returning ``(model, final test metrics)``; the model is this rank's, unwrapped.

    ``probe`` (optional) observes training without changing it: ``probe.attach(model)`` runs once
    before the first step (after ``calibrate``; it may register gradient hooks), ``probe.after_epoch(
    model, epoch, test_loader)`` after every epoch's evaluation.
    """
    config = config.resolved()
    check_fresh_start(config)
    with torch_threads(config.threads):
        return _run_training(config, probe)


def _run_training(config: TrainConfig, probe) -> tuple[nn.Module, dict]:
    ctx = setup_distributed(config.device)
    if config.batch_size % ctx.world:
        raise UserError(f"--batch-size {config.batch_size} must be a multiple of the {ctx.world} processes")
    checkpoint_path = config.out / CHECKPOINT_NAME
    needs_float_start = config.scheme != FLOAT_SCHEME and not config.resume
    float_start = _prepare_float_start(config, ctx) if needs_float_start else None
    torch.manual_seed(config.seed)  # after any full-precision pre-training: same run either way
    model = build_model(config.model, data=config.data)
    num_classes = model_num_classes(model)  # before the swap adds the adapters' Linears
    if float_start is not None:
        _load_float_weights(model, float_start)
    quantize_model(model, config.scheme, config.bits)
    configure_quantizers(model, config)
    model.to(ctx.device)

    train_loader, test_loader = make_loaders(
        dataset_of(config.model), config.data, config.batch_size // ctx.world, seed=config.seed, rank=ctx.rank,
        world=ctx.world, workers=config.workers,
    )
    if len(train_loader) == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the training set")
    train_loader.set_epoch(0)
    calibrate(model, next(iter(train_loader))[0].to(ctx.device))
    if probe is not None:
        probe.attach(model)
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=MOMENTUM)

    start_epoch, history = 0, []
    if config.resume:
        start_epoch, history = _resume(checkpoint_path, model, optimizer, config)
    net = nn.parallel.DistributedDataParallel(model) if ctx.world > 1 else model

    label = data_label(dataset_of(config.model), config.data)
    meta = {"model": config.model, "scheme": config.scheme, "bits": config.bits, "data": label,
            "num_classes": num_classes, "epochs": config.epochs, "config": config.to_json()}
    total_steps = config.epochs * len(train_loader)
    metrics = history[-1]["test"] if history else {}
    epochs = tqdm(range(start_epoch, config.epochs), desc=f"{config.model} {config.scheme}", unit="epoch",
                  disable=None if ctx.is_main else True, initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        started = time.perf_counter()
        train_stats = _train_epoch(net, train_loader, optimizer, config, ctx, epoch, total_steps)
        metrics = evaluate(model, test_loader, ctx.device)
        if probe is not None:
            probe.after_epoch(model, epoch, test_loader)
        history.append({"epoch": epoch + 1, "train": train_stats, "test": metrics,
                        "seconds": time.perf_counter() - started})
        epochs.set_postfix(loss=f"{train_stats['loss']:.3f}", top1=f"{metrics['top1']:.2f}")
        if ctx.is_main and not _on_terminal():  # no bar: one plain line per epoch instead
            print(f"{config.model} {config.scheme}{'' if config.bits is None else f' {config.bits}-bit'} epoch "
                  f"{epoch + 1}/{config.epochs}: train loss {train_stats['loss']:.3f}, test top-1 "
                  f"{metrics['top1']:.2f} % ({history[-1]['seconds']:.1f} s){_data_note(label)}", flush=True)
        if ctx.is_main:
            save_checkpoint(checkpoint_path, model, {**meta, "epoch": epoch + 1, "complete": epoch + 1 == config.epochs,
                                                     "metrics": metrics}, optimizer)
            _write_metrics(config.out / METRICS_NAME, config, history)
        if ctx.world > 1:
            dist.barrier()
    return model, metrics


def _data_note(label: str) -> str:
    """The data set after an accuracy line, where it could be mistaken for another (digits32)."""
    return f" on {label}" if label.startswith(DIGITS32) else ""


def model_num_classes(model: nn.Module) -> int:
    """Outputs of a float model's last Linear layer (its classifier)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def _resume(path: Path, model: nn.Module, optimizer, config: TrainConfig) -> tuple[int, list]:
    payload = read_checkpoint(path)
    for key in ("model", "scheme", "bits"):
        if payload[key] != getattr(config, key):
            raise UserError(f"--resume: {path} was trained with {key}={payload[key]!r}, not {getattr(config, key)!r}")
    model.load_state_dict(payload["state_dict"])
    if payload.get("optimizer") is None:
        raise UserError(f"--resume: {path} has no optimizer state; start a new run instead")
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    metrics_path = path.parent / METRICS_NAME
    history = json.loads(metrics_path.read_text())["epochs"] if metrics_path.is_file() else []
    return payload["epoch"], history[: payload["epoch"]]


def _train_epoch(net, loader, optimizer, config: TrainConfig, ctx: Dist, epoch: int, total_steps: int) -> dict:
    net.train()
    loader.set_epoch(epoch)
    loss_sum = correct = count = 0.0
    step = epoch * len(loader)
    batches = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch",
                   disable=None if ctx.is_main and len(loader) > 50 else True)
    for x, y in batches:
        for group in optimizer.param_groups:
            group["lr"] = group["lr_scale"] * cosine_lr(config.lr, step, total_steps)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], ctx.device)
    return {"loss": loss_sum / count, "top1": 100.0 * correct / count, "lr": cosine_lr(config.lr, step, total_steps)}
