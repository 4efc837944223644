"""The bundle of a trained quantized model: constants, golden vectors, accuracy; written atomically.

:func:`export_checkpoint` is ``asqhw export CHECKPOINT OUTDIR``: it checks the checkpoint, traces
the network into a graph and derives its constants from the training split
(:mod:`quant.export.graph`), runs the golden model on the whole test split, records golden-vs-float
fidelity (:mod:`quant.export.fidelity`) and writes the bundle, format 2 for every network
(:func:`build_graph_bundle`, :func:`golden.bundle.write_bundle`).

:func:`build_bundle` and :func:`export_model` build the digits chain as a format-1 bundle
(:mod:`quant.export.fold`): the same layers as the chain view of its format-2 bundle
(:func:`golden.graph.chain_bundle`), kept for the Python callers that fold a model in memory.

The repository's ``models/`` folder holds the shipped (tracked) bundles: a write anywhere under it
needs ``update_shipped`` (``asqhw export --update-shipped``, which ``make export`` passes), so an
export meant for a scratch folder never replaces a shipped bundle by a slip of the path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asqhw.atomic import check_writable
from asqhw.errors import UserError
from golden import formats
from golden.bundle import MANIFEST, Bundle, parse_manifest, write_bundle
from golden.model import pixels_to_codes, run, vector_arrays
from quant.export.fidelity import free_running_table, teacher_forced
from quant.export.fold import manifest_dict
from quant.export.networks import load_architecture, network_for, user_network_for
from quant.export.trace import float_trace, single_thread
from quant.schemes import FLOAT_SCHEME


def resolve_post_frac_bits(post_frac_bits: int | None, bits: int) -> int:
    """F of the POST table: the given one (checked) or ``formats.default_post_frac_bits(bits)``."""
    if post_frac_bits is None:
        return formats.default_post_frac_bits(bits)
    if isinstance(post_frac_bits, bool) or not isinstance(post_frac_bits, int) \
            or not 0 <= post_frac_bits <= formats.MAX_POST_FRAC_BITS:
        raise UserError(f"--post-frac-bits {post_frac_bits!r}: F of the POST table must be an integer "
                        f"0..{formats.MAX_POST_FRAC_BITS} (default for BITS={bits}: "
                        f"{formats.default_post_frac_bits(bits)})")
    return post_frac_bits


def code_bound(accuracy: dict) -> float:
    """E: the largest teacher-forced bound on a golden code's distance from the float model's, over
    every requantizer that outputs codes and every ASQ unit (``accuracy["teacher_forced"]``)."""
    bounds = [0.0]
    for row in accuracy["teacher_forced"]:
        if row.get("requant_output") == "codes":
            bounds.append(row["requant_max_bound"])
        if "asq_bound_max" in row:
            bounds.append(row["asq_bound_max"])
    return max(bounds)


def build_bundle(model, meta: dict, progress: bool = True, post_frac_bits: int | None = None) -> Bundle:
    """Constants from the training split, golden vectors and accuracy on the test split.

    ``post_frac_bits``: F of the POST table. None: for a model with POST weights the smallest F from
    ``formats.default_post_frac_bits(BITS)`` up whose bound E (:func:`code_bound`) is below one code
    (docs/arithmetic.md 2.2; the tried F and their E are recorded in ``accuracy["post_frac_bits_search"]``),
    otherwise the default.
    """
    return _with_post_frac_bits(lambda f: _build_bundle(model, meta, progress, f), model, meta, post_frac_bits)


def _with_post_frac_bits(build, model, meta: dict, post_frac_bits: int | None):
    """``build(F)`` at the given F (checked), or at the smallest F from the default up whose bound E is
    below one code when the model has POST weights (the tried F and their E recorded in
    ``accuracy["post_frac_bits_search"]``), else at the default. One rule for chain and graph bundles."""
    from quant.quantize import quantized_layers

    bits = int(meta["bits"])
    if post_frac_bits is not None:
        return build(resolve_post_frac_bits(post_frac_bits, bits))
    frac_bits = formats.default_post_frac_bits(bits)
    has_post = any(getattr(layer.weight_quant, "kind", None) == formats.POST for _, layer in quantized_layers(model))
    if not has_post:
        return build(frac_bits)
    tried = {}
    while True:
        bundle = build(frac_bits)
        tried[str(frac_bits)] = code_bound(bundle.manifest.accuracy)
        if tried[str(frac_bits)] < 1.0 or frac_bits == formats.MAX_POST_FRAC_BITS:
            break
        frac_bits += 1
    search = {"rule": "smallest F from the default up with E < 1", "E": tried}
    accuracy = {**bundle.manifest.accuracy, "post_frac_bits_search": search}
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, accuracy=accuracy))


def _build_bundle(model, meta: dict, progress: bool, frac_bits: int) -> Bundle:
    """:func:`build_bundle` with the POST table's F given."""
    net = network_for(meta)
    with single_thread():
        x_train, _, x_test, y_test = net.split()
        steps = tqdm(total=4, desc="export", disable=not progress, leave=False)
        trace_train = float_trace(model, x_train)
        steps.update()
        man, weights = manifest_dict(model, net, meta, trace_train, frac_bits)
        manifest = parse_manifest(man, f"{meta['model']} export")
        bundle = Bundle(manifest=manifest, weights=weights)
        steps.update()
        trace_test = float_trace(model, x_test)
        pixels = net.pixels(x_test)
        codes = pixels_to_codes(bundle, pixels)
        first = net.layer_names[0]
        if not np.array_equal(codes, trace_test.codes[first]):
            raise UserError(f"input LUT disagrees with the float model's {first} input codes "
                            "(report a bug)")
        result = run(bundle, codes)
        steps.update()
        labels = y_test.numpy()
        float_pred = trace_test.logits.argmax(axis=1)
        accuracy = {
            "split": net.split_name, "n_test": int(len(labels)),
            "float": float((float_pred == labels).mean()),
            "golden": float((result["pred"] == labels).mean()),
            "flips": int((float_pred != result["pred"]).sum()),
            "layers": free_running_table(bundle, result, trace_test),
            "teacher_forced": teacher_forced(bundle, model, trace_test),
        }
        vectors = vector_arrays(result, labels)
        vectors["pixels"] = pixels.astype(np.uint8)
        vectors["float_pred"] = float_pred.astype(np.uint8)
        bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(manifest, accuracy=accuracy),
                                     vectors=vectors)
        steps.update()
        steps.close()
    return bundle


#: The shipped bundles of this checkout (absent when the package is installed without the repository).
SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"


def check_shipped(outdir, update_shipped: bool) -> None:
    """Refuse ``outdir`` under the shipped models folder unless ``update_shipped`` is given."""
    models = SHIPPED_MODELS
    if update_shipped or not Path(models).is_dir():
        return
    target = Path(outdir).resolve()
    if target.is_relative_to(Path(models).resolve()):
        raise UserError(f"{outdir} is inside the shipped models folder {models}: pass --update-shipped to "
                        "replace a shipped bundle (make export does), or give a folder outside it")


def check_outdir(outdir) -> None:
    """Refuse to replace an existing folder that is not a bundle (``export CKPT models`` would
    otherwise swap the whole ``models`` folder for one bundle)."""
    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir())
                                                     and not (outdir / MANIFEST).is_file())):
        raise UserError(f"{outdir} exists and is not a model bundle: refusing to replace it; "
                        "give a new folder or an existing bundle folder as OUTDIR")


def check_target(outdir, update_shipped: bool = False) -> None:
    """Refuse an export target before any work: inside ``models/`` without ``update_shipped``
    (:func:`check_shipped`), an existing folder that is not a bundle, or a folder not writable."""
    check_shipped(outdir, update_shipped)
    check_outdir(outdir)
    check_writable(outdir, what="the bundle folder", fix="give OUTDIR a writable folder", folder=True)


def export_model(model, meta: dict, outdir, progress: bool = True,
                 post_frac_bits: int | None = None, update_shipped: bool = False) -> Bundle:
    """Build the bundle of a quantized model and write it to ``outdir`` atomically.

    ``update_shipped`` allows an ``outdir`` inside the repository's ``models/`` (:func:`check_shipped`).
    """
    check_target(outdir, update_shipped)
    network_for(meta, "checkpoint")  # only registered networks can be exported
    return _write_export(model, meta, outdir, progress, post_frac_bits)


def _write_export(model, meta: dict, outdir, progress: bool, post_frac_bits: int | None) -> Bundle:
    """Build and write the bundle; the target and the network were checked by the caller."""
    bundle = build_bundle(model, meta, progress=progress, post_frac_bits=post_frac_bits)
    write_bundle(bundle, outdir)
    return bundle


def export_checkpoint(checkpoint, outdir, progress: bool = True,
                      post_frac_bits: int | None = None, update_shipped: bool = False, network: str | None = None):
    """``asqhw export CHECKPOINT OUTDIR [--post-frac-bits F] [--update-shipped] [--network FILE.py:CLASS]``:
    load a checkpoint, export its bundle, format 2 (a graph, :func:`build_graph_bundle`) for every network.

    ``post_frac_bits`` is F of the POST table; None: the smallest F from
    ``formats.default_post_frac_bits(bits)`` up whose bound E is below one code (:func:`build_bundle`).
    ``update_shipped`` allows an ``outdir`` inside the repository's ``models/`` (:func:`check_shipped`).
    ``network`` names a user's own float network (:func:`quant.export.networks.load_architecture`),
    for a checkpoint of a model the project does not ship; its data set is the run's ``config["data"]``.
    """
    from quant.checkpoint import model_of, read_checkpoint

    check_target(outdir, update_shipped)
    meta = read_checkpoint(checkpoint)  # checks the fields before building anything
    net = network_for(meta, str(checkpoint)) if network is None else user_network_for(meta, str(checkpoint))
    bits = meta.get("bits")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in formats.INT_BITS:
        raise formats.WidthError(f"{checkpoint}: field 'bits' is {bits!r}; BITS must be "
                                 f"{formats.range_text(formats.INT_BITS)}")
    resolve_post_frac_bits(post_frac_bits, bits)  # a bad F is refused before any work
    if meta.get("scheme") in (None, FLOAT_SCHEME):
        raise UserError(f"{checkpoint}: field 'scheme' is {meta.get('scheme')!r}; export needs a "
                        "quantized checkpoint (train with --scheme asq, asq+post, ...)")
    architecture = None if network is None else load_architecture(network)
    model, meta = model_of(meta, checkpoint, architecture)
    bundle = build_graph_bundle(model, dict(meta), net, progress=progress, post_frac_bits=post_frac_bits)
    write_bundle(bundle, outdir)
    return bundle


# ----------------------------------------------------------------------------- format 2 (graphs)


@torch.no_grad()
def graph_input_lut(model, first_layer: str, pixel_max: int, input_shape) -> list:
    """The first quantized layer's input code of every pixel value, through the model's own
    normalisation (its forward up to that layer): lossless and one table for every position, or
    refused."""
    pixels = torch.arange(pixel_max + 1, dtype=torch.float32) / float(pixel_max)
    images = pixels.reshape(-1, 1, 1, 1).expand(-1, *input_shape).contiguous()
    layer = model.get_submodule(first_layer)
    seen = {}

    def grab(mod, args):
        seen["codes"] = layer.act_quant.codes(args[0])
        raise _StopForward

    hook = layer.register_forward_pre_hook(grab)
    try:
        model.eval()
        model(images)
    except _StopForward:
        pass
    finally:
        hook.remove()
    codes = seen["codes"].reshape(pixel_max + 1, -1)
    if not bool((codes == codes[:, :1]).all()):
        raise UserError(f"the input normalisation gives {first_layer} different codes for one pixel value at "
                        "different positions or channels: a bundle's input is one pixel table")
    lut = [int(v) for v in codes[:, 0]]
    if len(set(lut)) != len(lut):
        merged = sorted(p for p in range(len(lut)) if lut.count(lut[p]) > 1)
        raise UserError(f"the {first_layer} input step {float(layer.act_quant.step):g} maps pixels {merged} to shared "
                        "codes: the input coding must be lossless (give the model a fixed lossless input_step)")
    return lut


class _StopForward(Exception):
    pass


def build_graph_bundle(model, meta: dict, net, progress: bool = True, post_frac_bits: int | None = None):
    """The format-2 bundle (:class:`golden.graph.GraphBundle`) of a quantized model of network ``net``:
    its graph and constants from the training split (:func:`quant.export.graph.export_graph`), the
    golden model on the whole test split, fidelity (flips, free running, teacher forced) and vectors.

    ``post_frac_bits`` None: as :func:`build_bundle`, the smallest F from the default up whose bound
    E (:func:`code_bound`) is below one code for a model with POST weights.
    """
    return _with_post_frac_bits(lambda f: _build_graph_bundle(model, meta, net, progress, f), model, meta,
                                post_frac_bits)


def _build_graph_bundle(model, meta: dict, net, progress: bool, frac_bits: int):
    """:func:`build_graph_bundle` with the POST table's F given."""
    from golden.bundle import VECTORS, InputSpec
    from golden.graph import (
        GRAPH_FORMAT_VERSION,
        GraphBundle,
        graph_vector_arrays,
        parse_graph_manifest,
        predictions,
        run_graph,
    )
    from quant.export.fidelity import graph_free_running, graph_teacher_forced
    from quant.export.graph import export_graph

    bits = int(meta["bits"])
    with single_thread():
        x_train, _, x_test, y_test = net.split()
        steps = tqdm(total=4, desc="export", disable=not progress, leave=False)
        ex = export_graph(model, x_train, post_frac_bits=frac_bits)
        steps.update()
        first_layer = ex.conv_layer[ex.graph.consumers("input")[0]]
        lut = graph_input_lut(model, first_layer, net.pixel_max, tuple(net.input_shape))
        aq = model.get_submodule(first_layer).act_quant
        inp = InputSpec(shape=tuple(net.input_shape), pixel_max=net.pixel_max, bits=int(aq.bits),
                        signed=bool(aq.signed), step=float(aq.step.detach().double()), lut=tuple(lut))
        pixels = net.pixels(x_test)
        codes = np.asarray(lut, dtype=np.int64)[pixels]
        trace_test = float_trace(model, x_test)
        if not np.array_equal(codes, trace_test.codes[first_layer].reshape(codes.shape)):
            raise UserError(f"input LUT disagrees with the float model's {first_layer} input codes (report a bug)")
        result = run_graph(ex.graph, ex.weights, codes)
        steps.update()
        labels = y_test.numpy()
        float_pred = trace_test.logits.argmax(axis=1)
        pred = predictions(ex.graph, result)
        accuracy = {
            "split": net.split_name, "n_test": int(len(labels)),
            "float": float((float_pred == labels).mean()), "golden": float((pred == labels).mean()),
            "flips": int((float_pred != pred).sum()),
            "nodes": graph_free_running(ex.graph, result, ex, model, x_test),
            "teacher_forced": graph_teacher_forced(ex, model, x_test),
        }
        steps.update()
        man = {"format_version": GRAPH_FORMAT_VERSION, "model": net.name, "scheme": meta["scheme"], "bits": bits,
               "post_frac_bits": frac_bits, "input": inp.to_dict(), "graph": ex.graph.to_dict(), "accuracy": accuracy,
               "vectors": VECTORS}
        manifest = parse_graph_manifest(man, f"{net.name} export")
        vectors = graph_vector_arrays(ex.graph, result, pixels, labels, float_pred)
        steps.update()
        steps.close()
    return GraphBundle(manifest=manifest, weights=ex.weights, vectors=vectors)


def export_graph_model(model, meta: dict, net, outdir, progress: bool = True, post_frac_bits: int | None = None,
                       update_shipped: bool = False):
    """Build the format-2 bundle of ``model`` (network ``net``) and write it to ``outdir`` atomically."""
    check_target(outdir, update_shipped)
    bundle = build_graph_bundle(model, meta, net, progress=progress, post_frac_bits=post_frac_bits)
    write_bundle(bundle, outdir)
    return bundle
