"""``asqhw train``, ``asqhw eval`` (with ``--golden BUNDLE``) and ``asqhw overhead``."""

import argparse
import json
from pathlib import Path

from asqhw.errors import UserError
from golden.formats import INT_BITS, range_text
from quant.schemes import FLOAT_SCHEME, SCHEMES, paper_scheme

DEFAULT_OUT_ROOT = Path("build/train")
# TrainConfig fields the --adapter-* / --step-grad-scale options set (when given).
ADAPTER_SETTINGS = ("adapter_init", "step_grad_scale", "adapter_lr_scale", "adapter_weight_decay")


# --preset NAME -> (model, scheme, bits): the digits models the hardware ships with.
PRESETS = {f"digits-b{bits}": ("digits", paper_scheme(bits), bits) for bits in (2, 3, 4, 8)}


def register(subparsers) -> None:
    """Add the ``train``, ``eval`` and ``overhead`` subcommands."""
    train = subparsers.add_parser(
        "train", help="quantization-aware training (ASQ/POST and baselines)",
        description="Train a model with quantization-aware training (SGD, momentum 0.9, cosine lr, weight "
        "decay 1e-4), starting from a full-precision model: --init, or, without it, a float pre-training "
        "run first (its own length, set by --pretrain-epochs/--pretrain-lr/--pretrain-batch-size, default the "
        "data set's float recipe, e.g. 300 epochs for CIFAR-10; --pretrain-epochs 0 skips it), announced in "
        "one line and cached in OUT/../MODEL-fp for later runs with the same settings. Writes OUT/checkpoint.pt "
        "after every epoch and OUT/metrics.json; an OUT that "
        "already holds a checkpoint needs --resume (continue) or --force (start over). One CPU thread by "
        "default, so the weights do not depend on the machine (--threads). Under torchrun it trains "
        "data-parallel.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "eval", help="top-1/top-5 accuracy of a checkpoint on its test split (--golden: of a bundle's "
        "integer model too)")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=run_eval)

    overhead = subparsers.add_parser(
        "overhead", help="the ASQ adapter's parameter and compute overhead (paper Table 1)"
    )
    overhead.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    overhead.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3, 2], help="widths (default 8 4 3 2)")
    overhead.add_argument("--json", action="store_true", help="print JSON instead of a table")
    overhead.set_defaults(handler=run_overhead)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="digits-bB: the shipped digits model at B bits (sets --model, --scheme, --bits)")
    parser.add_argument("--model", help="digits, resnet20, resnet18, resnet34 or mobilenet_v2 (default digits)")
    parser.add_argument("--scheme", help=f"{FLOAT_SCHEME}, {', '.join(SCHEMES)} (default: the paper's for --bits)")
    parser.add_argument("--bits", type=int,
                        help=f"bit width of the middle layers, {range_text(INT_BITS)} (first/last are 8)")
    parser.add_argument("--out", type=Path,
                        help="output folder (default build/train/PRESET or build/train/MODEL-SCHEME-bBITS)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the data set's recipe)")
    parser.add_argument("--lr", type=float, help="initial learning rate (default: the data set's recipe)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the data set's recipe)")
    parser.add_argument("--init", help="full-precision checkpoint to start from (asqhw fp or torchvision state_dict); "
                        "without it a float pre-training runs first (--pretrain-*)")
    parser.add_argument("--pretrain-epochs", type=int,
                        help="epochs of the float pre-training a quantized run without --init does first (default: "
                        "the data set's float recipe: digits 40, digits32 60, CIFAR-10 300, ImageNet 90); 0: none, "
                        "the quantized run starts from random initialisation")
    parser.add_argument("--pretrain-lr", type=float,
                        help="initial learning rate of that pre-training (default: the float recipe's)")
    parser.add_argument("--pretrain-batch-size", type=int,
                        help="batch size of that pre-training (default: the float recipe's)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    parser.add_argument("--force", action="store_true",
                        help="start over in an --out that already holds a checkpoint (replaced after the first "
                        "epoch); without --resume or --force such a run is refused")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads torch may use (default 1: the same weights on any machine; more is "
                        "faster but the result then depends on the thread count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order, augmentation")
    parser.add_argument("--data", help="data folder (CIFAR-10: cifar-10-batches-py; ImageNet: train/ val/); for "
                        "digits the variant: digits (default) or digits-vary (per-image exposure); for resnet20 "
                        "also digits32: the digits images at 32x32x3, offline (not CIFAR-10)")
    parser.add_argument("--workers", type=int, default=4, help="data-loading processes (ImageNet)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    # Defaults live in quant.train / quant.quantizers (docs/asq-adaptation.md says why); None keeps them.
    parser.add_argument("--adapter-init", choices=("paper", "shrunk"),
                        help="ASQ adapter init: paper (last Linear N(0, 0.01), bias 1) or shrunk (that weight scaled "
                        "so |beta - 1| <= 2e-3 on the first batch)")
    parser.add_argument("--step-grad-scale", choices=("sample", "batch"),
                        help="what N counts in the activation step's gradient scale 1/sqrt(Q_P N): one sample's "
                        "elements or the whole batch's")
    parser.add_argument("--adapter-lr-scale", type=float,
                        help="ASQ adapters' learning rate as a multiple of --lr")
    parser.add_argument("--adapter-weight-decay", type=float, help="ASQ adapters' weight decay")


def _train_config(args):
    from quant.train import TrainConfig

    model, scheme, bits = args.model, args.scheme, args.bits
    if args.preset:
        p_model, p_scheme, p_bits = PRESETS[args.preset]
        fixed = (("--model", model, p_model), ("--scheme", scheme, p_scheme), ("--bits", bits, p_bits))
        for flag, given, wanted in fixed:
            if given is not None and given != wanted:
                raise UserError(f"--preset {args.preset} means {flag} {wanted}, but {flag} {given} was given")
        model, scheme, bits = p_model, p_scheme, p_bits
    model = model or "digits"
    if scheme is None:
        if bits is None:
            raise UserError(f"give --bits B ({range_text(INT_BITS)}) and optionally --scheme, or --scheme fp "
                            "for a float model")
        scheme = paper_scheme(bits)
    if scheme != FLOAT_SCHEME and bits is None:
        raise UserError(f"--scheme {scheme} needs --bits B ({range_text(INT_BITS)})")
    if args.out is not None:
        out = args.out
    elif args.preset:
        out = DEFAULT_OUT_ROOT / args.preset  # build/train/digits-bB: where `make export` reads it
    else:
        out = DEFAULT_OUT_ROOT / (f"{model}-fp" if scheme == FLOAT_SCHEME else f"{model}-{scheme}-b{bits}")
    adapter = {key: getattr(args, key, None) for key in ADAPTER_SETTINGS}
    return TrainConfig(
        model=model, scheme=scheme, bits=bits, out=out, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, seed=args.seed, data=args.data, init=args.init, resume=args.resume,
        force=args.force, threads=args.threads, pretrain_epochs=args.pretrain_epochs,
        pretrain_lr=args.pretrain_lr, pretrain_batch_size=args.pretrain_batch_size, workers=args.workers,
        device=args.device, **{k: v for k, v in adapter.items() if v is not None},
    )


def run_train(args) -> int:
    from quant.data import data_label
    from quant.models import dataset_of
    from quant.train import CHECKPOINT_NAME, train

    config = _train_config(args)
    metrics = train(config)
    print(f"{config.model} {config.scheme} bits={config.bits} on {data_label(dataset_of(config.model), config.data)}: "
          f"test top-1 {metrics['top1']:.2f} %, top-5 {metrics['top5']:.2f} % -> {Path(config.out) / CHECKPOINT_NAME}")
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``asqhw eval``."""
    parser.add_argument("checkpoint", type=Path, nargs="?",
                        help="checkpoint written by asqhw train (optional with --golden BUNDLE)")
    parser.add_argument("--data", help="data folder (CIFAR-10 / ImageNet); for digits the variant (default: the "
                        "one the checkpoint was trained on)")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    parser.add_argument("--workers", type=int, default=4, help="data-loading processes (ImageNet)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--golden", type=Path, metavar="BUNDLE",
                        help="also evaluate the golden integer model of BUNDLE (format 1, a chain, or 2, a graph) "
                        "on its network's test split, beside the float model, with a per-layer (per-node) error table")


def float_eval(args) -> dict:
    """Evaluate ``args.checkpoint`` on its test split: ``{model, scheme, bits, top1, top5, loss}``."""
    import torch

    from quant.checkpoint import load_checkpoint
    from quant.data import data_label, make_loaders
    from quant.models import dataset_of
    from quant.train import evaluate

    model, meta = load_checkpoint(args.checkpoint)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = args.data if args.data is not None else _trained_variant(meta)
    _, test_loader = make_loaders(dataset_of(meta["model"]), data, args.batch_size, workers=args.workers)
    metrics = evaluate(model.to(device), test_loader, device)
    return {"checkpoint": str(args.checkpoint), "model": meta["model"], "scheme": meta["scheme"],
            "bits": meta["bits"], "data": data_label(dataset_of(meta["model"]), data), **metrics}


def _trained_variant(meta: dict) -> str | None:
    """The offline data set a checkpoint was trained on: a digits variant or digits32 (None: the plain
    digits set, or a folder to pass again)."""
    from quant.data import DIGITS_VARIANTS, is_digits32

    data = meta.get("config", {}).get("data")
    return data if data in DIGITS_VARIANTS or is_digits32(data) else None


def print_eval(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        data = f" on {result['data']}" if result.get("data") else ""
        print(f"{result['model']} {result['scheme']} bits={result['bits']}{data}: top-1 {result['top1']:.2f} %, "
              f"top-5 {result['top5']:.2f} %")


def run_eval(args) -> int:
    if args.golden is not None:
        from quant.export.cli import run_golden_eval

        return run_golden_eval(args)
    if args.checkpoint is None:
        raise UserError("asqhw eval needs a CHECKPOINT (or --golden BUNDLE to evaluate a model bundle)")
    print_eval(float_eval(args), args.json)
    return 0


def run_overhead(args) -> int:
    from quant.overhead import format_table, overhead_table

    table = overhead_table(args.model, args.bits)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0
