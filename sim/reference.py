"""The reference model the testbenches compare the RTL with: the golden integer model, nothing else.

Every expected value in ``sim/`` comes from here, and everything here comes from ``golden`` (the
specification of the hardware's arithmetic): the unit testbenches use its primitives
(:mod:`golden.arith`), the full-network testbench its bundle and inference (:mod:`golden.model`).
No expected value is computed by the hardware generator or by the testbench itself.
"""

from pathlib import Path

import numpy as np

from asqhw.errors import UserError
from golden import arith, formats

# ----------------------------------------------------------------------------- units


def lane_products(kind: str, bits: int, a: int, codes, frac_bits: int) -> list[int]:
    """Products a multiplier lane must give for activation ``a`` and raw weight ``codes``.

    ``codes`` are the raw b-bit words on the port (two's complement for ``int``, sign-magnitude
    for POT/POST), as the hardware sees them.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if kind == formats.INT:
        return [int(v) for v in np.atleast_1d(arith.int_product(a, arith.raw_to_int(codes, bits)))]
    return [int(v) for v in np.atleast_1d(arith.product(a, codes, kind, bits, frac_bits))]


def mac_sums(kind: str, bits: int, frac_bits: int, items) -> list[int]:
    """Accumulators of one MAC array group: ``items`` is a list of ``(a[simd], w[pe][simd])``."""
    pe = len(items[0][1])
    sums = [0] * pe
    for acts, weights in items:
        for p in range(pe):
            for a, w in zip(acts, weights[p], strict=True):
                sums[p] += lane_products(kind, bits, a, [w], frac_bits)[0]
    return sums


def requant_value(spec, acc: int, chan: int, g: int) -> int:
    """The requantizer's output for one accumulator of channel ``chan`` (``spec``: RequantSpec)."""
    return int(arith.requantize(acc, spec.M[chan], spec.B[chan], spec.S, g=g, G=spec.G,
                                lo=spec.lo, hi=spec.hi))


def asq_codes_and_beta(consts, ymap) -> tuple[np.ndarray, int]:
    """The ASQ unit's output for one feature map ``ymap`` (C, H, W): codes (C, H, W) and beta."""
    codes, beta = arith.asq_unit(np.asarray(ymap, dtype=np.int64)[None], consts)
    return codes[0], int(beta[0])


# ----------------------------------------------------------------------------- whole network


class NetworkReference:
    """Golden model of one bundle for the full-network testbench.

    The expected logits are recomputed with :func:`golden.model.run` from the bundle's input codes
    and checked against the bundle's stored golden vectors on construction, so a stale bundle
    (vectors that no longer match its constants) is caught before any simulation.

    Parameters
    ----------
    bundle_dir : path-like
        A bundle folder (``manifest.json``, ``.mem`` files, ``vectors.npz``).
    """

    def __init__(self, bundle_dir):
        from golden.model import load_bundle, run

        self.bundle = load_bundle(Path(bundle_dir))
        vec = self.bundle.vectors
        first = f"{self.bundle.layers[0].name}.in"  # the first layer's input: the image codes
        if first not in vec or "logits" not in vec or "labels" not in vec:
            raise UserError(f"{bundle_dir}: vectors.npz lacks {first!r}, 'logits' or 'labels'; "
                            "re-export the bundle with `asqhw export`")
        self.inputs = np.asarray(vec[first], dtype=np.int64)
        self.labels = np.asarray(vec["labels"], dtype=np.int64)
        self.golden = run(self.bundle, self.inputs)
        stored = np.asarray(vec["logits"], dtype=np.int64)
        if not np.array_equal(stored, self.golden["logits"]):
            bad = int(np.argwhere(stored != self.golden["logits"])[0][0])
            raise UserError(f"{bundle_dir}: stored golden logits of image {bad} differ from "
                            "golden.model.run on the bundle's constants; re-export the bundle")
        self.logits = self.golden["logits"]
        self.pred = np.asarray(self.golden["pred"], dtype=np.int64)

    @property
    def n_images(self) -> int:
        return len(self.inputs)

    @property
    def logit_layer(self) -> str:
        return self.bundle.layers[-1].name

    def image_codes(self, image: int) -> np.ndarray:
        """Signed input codes of ``image``, shape (C, H, W)."""
        return self.inputs[image]

    def expected_logits(self, image: int) -> list[int]:
        return [int(v) for v in self.logits[image]]

    def predict(self, codes) -> dict:
        """Golden inference of one image from the input codes the design took (flat, C*H*W).

        Returns ``{"logits": [...], "pred": int, "inputs": {layer: codes of its input}}`` for the
        layers after the first (whose input is the image itself).
        """
        from golden.model import run

        shape = tuple(self.bundle.manifest.input.shape)
        codes = np.asarray(codes, dtype=np.int64)
        if codes.size != int(np.prod(shape)):
            raise AssertionError(f"{codes.size} input codes for one image, expected {int(np.prod(shape))}")
        out = run(self.bundle, codes.reshape((1,) + shape))
        return {"logits": [int(v) for v in out["logits"][0]], "pred": int(out["pred"][0]),
                "inputs": {layer.name: out[f"{layer.name}.in"][0]
                           for layer in self.bundle.layers[1:]}}

    def golden_accuracy(self, images=None) -> float:
        """Accuracy of the golden predictions over ``images`` (default: all)."""
        idx = np.arange(self.n_images) if images is None else np.asarray(list(images))
        return float(np.mean(self.pred[idx] == self.labels[idx]))


def accuracy(logits_by_image: dict, labels) -> float:
    """Accuracy of predictions (first argmax, as golden) from ``{image: logits}``."""
    hits = [int(np.argmax(v)) == int(labels[i]) for i, v in logits_by_image.items()]
    return float(np.mean(hits)) if hits else float("nan")
