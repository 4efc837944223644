"""Checkpoints: one file per training run, rewritten atomically after every epoch.

Format (a ``torch.save``'d dict, loadable with ``torch.load(..., weights_only=True)``):

==================  =============================================================================
key                 meaning
==================  =============================================================================
``format``          ``"asqhw-quant-checkpoint"``
``format_version``  ``1``
``model``           model name (``quant.models.MODELS``), e.g. ``"digits"``
``scheme``          ``"fp"`` or a scheme of ``quant.SCHEMES`` (``"asq+post"``, ...)
``bits``            BITS of the middle layers (int); ``None`` for ``"fp"``
``num_classes``     classifier outputs
``epoch``           epochs completed
``epochs``          epochs planned; ``complete`` is ``epoch == epochs``
``metrics``         last evaluation on the test split: ``top1``, ``top5`` (percent), ``loss``
``config``          the training settings (JSON-able dict: lr, batch_size, seed, init, ...)
``state_dict``      the model's state (quantizer state included), without a DDP ``module.`` prefix
``optimizer``       the SGD state (momentum buffers) for ``--resume``; may be ``None``
``rng``             ``{"torch": ByteTensor}``: torch's CPU generator state, for ``--resume``
==================  =============================================================================

``load_checkpoint(path)`` rebuilds the model (``build_model`` + ``quantize_model``), loads the state
and returns it in eval mode together with the metadata (every key above except ``state_dict``,
``optimizer`` and ``rng``).
"""

import io
from pathlib import Path

import torch
from torch import nn

from asqhw.atomic import atomic_write_bytes
from asqhw.errors import UserError
from golden.formats import INT_BITS, range_text
from quant.models import build_model, check_model_name
from quant.quantize import check_scheme, quantize_model

FORMAT = "asqhw-quant-checkpoint"
FORMAT_VERSION = 1
_BULKY = ("state_dict", "optimizer", "rng")
#: Most classifier outputs a checkpoint may claim (ImageNet has 1000).
MAX_CLASSES = 100_000


def save_checkpoint(path, model: nn.Module, meta: dict, optimizer=None) -> Path:
    """Write ``model``'s state and ``meta`` (model, scheme, bits, epoch, ...) to ``path`` atomically."""
    missing = {"model", "scheme", "bits", "epoch"} - set(meta)
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metrics": {},
        "config": {},
        **meta,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": {"torch": torch.get_rng_state()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict of ``path`` (checked to be this project's format)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: train one with `asqhw train` or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise UserError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    return check_payload(payload, path)


def check_payload(payload, path) -> dict:
    """``payload``, a ``torch.load``'ed file, if it is this project's checkpoint format (``path`` names it)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an asqhw checkpoint (no format {FORMAT!r}); pass one `asqhw train` wrote")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {payload.get('format_version')!r}; this asqhw reads "
            f"version {FORMAT_VERSION}: retrain it"
        )
    for key in ("model", "scheme"):
        if not isinstance(payload.get(key), str):
            raise UserError(f"checkpoint {path}: field {key!r} is {payload.get(key)!r}, not a name; retrain it")
    bits = payload.get("bits")
    if bits is not None and (type(bits) is not int or bits not in INT_BITS):
        raise UserError(f"checkpoint {path}: field 'bits' is {bits!r}; BITS must be "
                        f"{range_text(INT_BITS)}; retrain it")
    config = payload.get("config")
    for key in ("model", "scheme", "bits"):
        # The run's settings record what it trained: a field edited since disagrees with them.
        if isinstance(config, dict) and key in config and config[key] != payload.get(key):
            raise UserError(f"checkpoint {path}: field {key!r} is {payload.get(key)!r} but the run's config "
                            f"trained {config[key]!r} (edited since training); retrain it or pass another checkpoint")
    classes = payload.get("num_classes")
    if classes is not None and (type(classes) is not int or not 2 <= classes <= MAX_CLASSES):
        raise UserError(f"checkpoint {path}: field 'num_classes' is {classes!r}, not a class count "
                        f"2..{MAX_CLASSES}; retrain it")
    return payload


def build_for(meta: dict, architecture=None) -> nn.Module:
    """A model with the architecture and quantizers ``meta`` describes (untrained state).

    ``architecture``: a callable returning the float ``nn.Module`` of a user's own network (its class,
    see :func:`quant.export.networks.load_architecture`); None builds the shipped model ``meta`` names.
    """
    if architecture is None:
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        model = build_model(check_model_name(meta["model"]), meta.get("num_classes"), data=config.get("data"))
    else:
        model = architecture()
    return quantize_model(model, check_scheme(meta["scheme"]), meta["bits"])


def _check_finite(state, path) -> None:
    """Refuse a state dict holding NaN or infinite values (a diverged or damaged run)."""
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path}: field 'state_dict' is not a dict; retrain it")
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"checkpoint {path}: {key} holds NaN or infinite values (a diverged or "
                            "damaged run); retrain it or pass another checkpoint")


def load_checkpoint(path) -> tuple[nn.Module, dict]:
    """``(model, meta)``: the model rebuilt and quantized per ``meta``, state loaded, eval mode."""
    return model_of(read_checkpoint(path), path)


def model_of(payload: dict, path, architecture=None) -> tuple[nn.Module, dict]:
    """:func:`load_checkpoint` of an already read checkpoint ``payload`` (``path`` names it in errors);
    ``architecture`` as in :func:`build_for`."""
    _check_finite(payload.get("state_dict"), path)
    try:
        model = build_for(payload, architecture)
    except UserError as err:
        raise UserError(f"checkpoint {path}: {err}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        # torch lists every mismatch on its own line: the first one says enough
        problems = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()] or [str(err)]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"checkpoint {path} does not match model {payload['model']!r}: "
                        f"{problems[0]}{more}") from None
    model.eval()
    return model, {k: v for k, v in payload.items() if k not in _BULKY}
