"""Integer-only inference of a model bundle: the golden model the RTL must equal bit for bit.

Data path: NumPy ``int64`` only (every intermediate's width is proven below 63 bits in
``docs/arithmetic.md`` and recorded in the bundle). The layer loop follows that document: products
(``golden.arith``), accumulators, requantization, and the ASQ unit in front of each ASQ layer.
"""

from __future__ import annotations

import numpy as np

from asqhw.errors import UserError
from golden import arith, formats
from golden.bundle import Bundle, Layer, read_bundle


def load_bundle(path, vectors: bool = True) -> Bundle:
    """The chain (:class:`Bundle`) of a bundle folder or of a bundle already read: what :func:`run` and
    the chain accelerator take.

    A format-1 bundle is returned as read (:func:`golden.bundle.read_bundle`); a chain-shaped
    format-2 bundle (the digits networks) as its format-1 view (:func:`golden.graph.chain_bundle`:
    the same layers, weights and vectors). Any other graph is returned as it is, so a chain reader
    handed it gives its one-line refusal, not a type error.
    """
    from golden.graph import GraphBundle, chain_bundle, is_chain

    bundle = path if hasattr(path, "manifest") and hasattr(path, "weights") else read_bundle(path, vectors=vectors)
    if isinstance(bundle, GraphBundle) and is_chain(bundle.graph):
        return chain_bundle(bundle)
    return bundle


def pixels_to_codes(bundle: Bundle, pixels) -> np.ndarray:
    """Map input pixels (integers ``0 .. pixel_max``) to conv1's signed codes via ``input.lut``."""
    pixels = np.asarray(pixels)
    top = bundle.manifest.input.pixel_max
    if pixels.dtype.kind not in "iu":
        raise UserError(f"input pixels must be integers 0..{top}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > top):
        raise UserError(f"input pixel outside 0..{top}")
    return np.asarray(bundle.manifest.input.lut, dtype=np.int64)[pixels]


def im2col(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """``(N, C, H, W)`` codes -> ``(N, C*k*k, Ho*Wo)`` patches, zero-padded, order ``(c, ky, kx)``."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kernel) // stride + 1
    wo = (w + 2 * pad - kernel) // stride + 1
    cols = np.empty((n, c, kernel, kernel, ho, wo), dtype=np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            cols[:, :, ky, kx] = xp[:, :, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
    return cols.reshape(n, c * kernel * kernel, ho * wo)


def layer_columns(codes_in: np.ndarray, layer: Layer) -> np.ndarray:
    """A layer's input codes as int64 ``(N, fan_in, positions)``: conv patches, or ``(N, fan_in, 1)`` for fc."""
    return _columns(codes_in, layer.kernel, layer.stride, layer.pad)


def _columns(codes_in: np.ndarray, kernel, stride, pad) -> np.ndarray:
    codes_in = codes_in.astype(np.int64, copy=False)
    if kernel is not None:
        return im2col(codes_in, kernel, stride, pad)
    return codes_in.reshape(codes_in.shape[0], -1, 1)


def weight_terms(codes: np.ndarray, kind: str, bits: int, frac_bits: int):
    """Split weights into ``[(coefficient matrix, uses_table)]`` so ``acc`` is a sum of matmuls.

    Exact rewriting of the sum of :func:`golden.arith.product` over the fan-in: an int product is
    ``a * w``; a POT product is ``a * (+-2^e)``; a POST product is ``a * (+-2^(e/2 + F))`` for even
    ``e`` plus ``T[a] * (+-2^((e-1)/2))`` for odd ``e`` (the two-sum form of docs/design.md 2.2).
    """
    if kind == formats.INT:
        return [(codes, False)]
    neg, m = arith.decode_signmag(codes, bits)
    sign = 1 - 2 * neg
    e = np.maximum(m - 1, 0)
    if kind == formats.POT:
        return [(np.where(m == 0, 0, sign << e), False)]
    even = np.where((m > 0) & (e % 2 == 0), sign << (e // 2 + frac_bits), 0)
    odd = np.where((m > 0) & (e % 2 == 1), sign << ((e - 1) // 2), 0)
    return [(even, False), (odd, True)]


def accumulate(codes_in: np.ndarray, layer: Layer, weights: np.ndarray, frac_bits: int) -> np.ndarray:
    """The layer's integer accumulators: ``(N, C_out, Ho, Wo)`` for conv, ``(N, C_out)`` for fc."""
    acc = accumulate_codes(codes_in, weights, layer.weight.kind, layer.weight.bits, layer.act_in.bits,
                           frac_bits, kernel=layer.kernel, stride=layer.stride, pad=layer.pad)
    return acc.reshape((acc.shape[0],) + tuple(layer.out_shape))


def accumulate_codes(codes_in: np.ndarray, weights: np.ndarray, kind: str, bits: int, act_bits: int,
                     frac_bits: int, *, kernel=None, stride=1, pad=0) -> np.ndarray:
    """Accumulators of ``weights`` over ``codes_in``, a layer given by its parameters.

    ``kernel`` None: an fc layer (result ``(N, C_out, 1)``); else a conv layer (result
    ``(N, C_out, Ho*Wo)``). ``act_bits`` sizes the POST table.
    """
    cols = _columns(codes_in, kernel, stride, pad)
    table = None
    if kind == formats.POST:
        # T of |a|, negated for a negative code (arith.post_product); |a| <= 2^(act_bits-1) for signed codes
        table = arith.post_table(act_bits, frac_bits)
        table = np.sign(cols) * table[np.abs(cols)]
    acc = np.zeros((cols.shape[0], weights.shape[0], cols.shape[2]), dtype=np.int64)
    for coeff, uses_table in weight_terms(weights.reshape(weights.shape[0], -1), kind, bits, frac_bits):
        # einsum: the same integer sums as matmul, 3-4x faster on int64 (which has no BLAS)
        acc += np.einsum("of,nfp->nop", coeff.astype(np.int64), table if uses_table else cols)
    return acc


def requant_layer(acc: np.ndarray, layer: Layer, beta) -> np.ndarray:
    """Requantize a layer's accumulators (``beta`` = its input's ASQ beta codes, or None)."""
    req = layer.requant
    chan = (-1,) + (1,) * (acc.ndim - 2)
    g = 1 if beta is None else np.asarray(beta, dtype=np.int64).reshape((-1,) + (1,) * (acc.ndim - 1))
    return arith.requantize(acc, np.asarray(req.M, dtype=np.int64).reshape(chan),
                            np.asarray(req.B, dtype=np.int64).reshape(chan), req.S,
                            g=g, G=req.G, lo=req.lo, hi=req.hi)


def run(bundle: Bundle, input_codes) -> dict:
    """Golden inference of a batch.

    Parameters
    ----------
    bundle : Bundle
    input_codes : integer array (N, C, H, W)
        conv1's signed input codes (see :func:`pixels_to_codes`).

    Returns
    -------
    dict of str -> int64 array
        ``"<layer>.in"``: the layer's input codes; ``"<layer>.acc"``: its accumulators;
        ``"<layer>.y"``: the requantizer's fixed-point output when it feeds an ASQ unit;
        ``"<layer>.beta"``: the ASQ beta codes of the layer's input (ASQ layers only);
        ``"logits"`` (FL fractional bits) and ``"pred"`` (first index of the largest logit).
    """
    man = bundle.manifest
    x = np.asarray(input_codes)
    if x.dtype.kind not in "iu":
        raise UserError(f"input codes must be integers, got dtype {x.dtype}")
    if list(x.shape[1:]) != list(man.input.shape):
        raise UserError(f"input codes have shape {list(x.shape[1:])}, the bundle expects "
                        f"{list(man.input.shape)}")
    x = x.astype(np.int64)
    out: dict = {}
    beta = None
    layers = man.layers
    for i, layer in enumerate(layers):
        name = layer.name
        if not layer.is_conv:
            x = x.reshape(x.shape[0], -1)
        out[f"{name}.in"] = x
        acc = accumulate(x, layer, bundle.weights[name], man.post_frac_bits)
        out[f"{name}.acc"] = acc
        result = requant_layer(acc, layer, beta)
        if layer.requant.output == "logits":
            out["logits"] = result
            out["pred"] = np.argmax(result, axis=1)
            break
        nxt = layers[i + 1]
        consts = nxt.act_in.asq_constants()
        if consts is None:
            x, beta = result, None
        else:
            out[f"{name}.y"] = result
            x, beta = arith.asq_unit(result, consts)
            out[f"{nxt.name}.beta"] = beta
    return out


def vector_arrays(result: dict, labels=None) -> dict:
    """The golden vectors stored in a bundle: inputs, each layer's output codes, betas, logits.

    Accumulators and ``y`` are left out (internal to a layer; :func:`run` recomputes them); every
    array is stored in the smallest NumPy integer type that holds it.
    """
    keep = {k: v for k, v in result.items() if not k.endswith((".acc", ".y"))}
    if labels is not None:
        keep["labels"] = np.asarray(labels)
    return {k: _smallest_int(v) for k, v in keep.items()}


def _smallest_int(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return v.astype(dtype)
    raise ValueError("value does not fit int64")
