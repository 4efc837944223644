"""The model bundle: the folder hardware is built from (read, validate, write).

A bundle is a folder holding

- ``manifest.json``: ``format_version``, ``model``, ``scheme``, ``bits``, ``post_frac_bits``,
  ``input`` (pixel range, conv1's input step and the pixel -> code table ``lut``), ``layers`` in
  order (name, kind, shapes, kernel/stride/pad, fan-in, ``act_in`` quantizer with its ASQ unit
  constants, ``weight`` format and ``.mem`` file, product range, accumulator width, ``requant``
  constants), ``accuracy`` (float and golden on the digits test split), ``vectors`` (file name);
- one ``$readmemh`` file per weight memory, ``<layer>.weights.mem``: one raw b-bit word per line,
  ``ceil(b/4)`` hex digits, order ``(c_out, c_in, ky, kx)`` (conv) or ``(out, in)`` (fc);
- ``vectors.npz``: golden vectors (written deterministically so export -> load -> export is byte
  for byte identical).

Every field is explained in ``docs/arithmetic.md``. Every problem found while reading raises
:class:`asqhw.errors.UserError` naming the file and the field.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asqhw.atomic import atomic_dir
from asqhw.errors import UserError
from golden import arith

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.npz"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class Bundle:
    """A model bundle in memory.

    Attributes
    ----------
    manifest : dict
        The parsed ``manifest.json`` (field order preserved).
    weights : dict of str -> int64 array
        Per layer, the weight codes shaped as ``layer["weight"]["shape"]``: signed values for
        ``int`` weights, raw sign-magnitude codes (``0 .. 2^b - 1``) for ``pot``/``post``.
    vectors : dict of str -> array
        Golden vectors (see :func:`golden.model.run` for the keys); may be empty.
    path : Path or None
        Where it was read from.
    """

    manifest: dict
    weights: dict
    vectors: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def layers(self) -> list:
        return self.manifest["layers"]

    def layer(self, name: str) -> dict:
        for layer in self.layers:
            if layer["name"] == name:
                return layer
        raise KeyError(name)


# ----------------------------------------------------------------------------- .mem files


def mem_text(raw, bits: int) -> str:
    """``$readmemh`` text of raw unsigned words (one per line, ``ceil(bits/4)`` hex digits)."""
    digits = max(1, math.ceil(bits / 4))
    raw = np.asarray(raw, dtype=np.int64).ravel()
    if raw.size and (raw.min() < 0 or raw.max() >= (1 << bits)):
        raise ValueError(f"memory word outside 0..{(1 << bits) - 1}")
    return "".join(f"{int(v):0{digits}x}\n" for v in raw)


def parse_mem(text: str, bits: int, count: int, where: str) -> np.ndarray:
    """Parse ``$readmemh`` text written by :func:`mem_text`; ``where`` names the file in errors."""
    digits = max(1, math.ceil(bits / 4))
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("//")]
    if len(lines) != count:
        raise UserError(
            f"{where}: {len(lines)} words, expected {count} (truncated or wrong file); "
            "re-export the bundle with `asqhw export`"
        )
    out = np.empty(count, dtype=np.int64)
    for i, ln in enumerate(lines):
        try:
            value = int(ln, 16)
        except ValueError:
            raise UserError(f"{where}: line {i + 1} {ln!r} is not hex; re-export the bundle") from None
        if len(ln) != digits or value >= (1 << bits):
            raise UserError(f"{where}: line {i + 1} {ln!r} is not a {bits}-bit word ({digits} hex digits)")
        out[i] = value
    return out


def weight_raw(codes: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Memory words of weight codes: two's complement for ``int``, unchanged for POT/POST."""
    return arith.int_to_raw(codes, bits) if kind == "int" else np.asarray(codes, dtype=np.int64)


def weight_codes(raw: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Inverse of :func:`weight_raw`."""
    return arith.raw_to_int(raw, bits) if kind == "int" else np.asarray(raw, dtype=np.int64)


# ----------------------------------------------------------------------------- vectors


def npz_bytes(arrays: dict) -> bytes:
    """A compressed ``.npz`` with fixed timestamps, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def read_npz(path: Path) -> dict:
    try:
        # Our own file object: np.load leaks the file it opened when the zip is unreadable.
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path}: missing; re-export the bundle with `asqhw export`") from None
    except Exception as err:  # zipfile.BadZipFile, ValueError from a truncated array, ...
        raise UserError(f"{path}: not a readable .npz ({err}); re-export the bundle") from None


# ----------------------------------------------------------------------------- manifest checks


def _need(obj: dict, key: str, where: str, types=None):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{where}: field {key!r} is missing; re-export the bundle with `asqhw export`")
    value = obj[key]
    if types is not None and (not isinstance(value, types) or (isinstance(value, bool) and types is int)):
        raise UserError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _check_len(values, expected: int, where: str, what: str) -> None:
    if len(values) != expected:
        raise UserError(f"{where}: {what} has {len(values)} entries, expected {expected}")


def flat_size(shape) -> int:
    return int(np.prod(shape))


def validate_manifest(man: dict, where: str = MANIFEST) -> None:
    """Check format version, field presence and that every shape agrees with its neighbours."""
    version = _need(man, "format_version", where, int)
    if version != FORMAT_VERSION:
        raise UserError(
            f"{where}: format_version {version} is not supported (this asqhw reads {FORMAT_VERSION}); "
            "re-export the bundle with this version's `asqhw export`"
        )
    for key in ("model", "scheme"):
        _need(man, key, where, str)
    bits = _need(man, "bits", where, int)
    if bits not in arith.INT_BITS:
        raise UserError(f"{where}: bits {bits} outside 2-8")
    _need(man, "post_frac_bits", where, int)
    inp = _need(man, "input", where, dict)
    lut = _need(inp, "lut", f"{where}: input", list)
    _check_len(lut, _need(inp, "pixel_max", f"{where}: input", int) + 1, f"{where}: input", "lut")
    layers = _need(man, "layers", where, list)
    if not layers:
        raise UserError(f"{where}: layers is empty")
    prev_shape = list(_need(inp, "shape", f"{where}: input", list))
    for i, layer in enumerate(layers):
        at = f"{where}: layers[{i}]"
        prev_shape = _validate_layer(layer, at, prev_shape, last=i == len(layers) - 1)
        if i > 0:
            _validate_link(layers[i - 1], layer, at)
    _need(man, "accuracy", where, dict)


def _validate_layer(layer: dict, at: str, prev_shape: list, last: bool) -> list:
    name = _need(layer, "name", at, str)
    at = f"{at} ({name})"
    kind = _need(layer, "kind", at, str)
    in_shape = list(_need(layer, "in_shape", at, list))
    out_shape = list(_need(layer, "out_shape", at, list))
    if kind == "fc":
        if in_shape != [flat_size(prev_shape)]:
            raise UserError(f"{at}: in_shape {in_shape} disagrees with the previous output {prev_shape}")
    elif kind == "conv":
        if in_shape != prev_shape:
            raise UserError(f"{at}: in_shape {in_shape} disagrees with the previous output {prev_shape}")
        k, stride, pad = (_need(layer, f, at, int) for f in ("kernel", "stride", "pad"))
        h_out = (in_shape[1] + 2 * pad - k) // stride + 1
        w_out = (in_shape[2] + 2 * pad - k) // stride + 1
        if out_shape[1:] != [h_out, w_out]:
            raise UserError(f"{at}: out_shape {out_shape} disagrees with kernel/stride/pad ({h_out}x{w_out})")
    else:
        raise UserError(f"{at}: kind {kind!r} unknown (conv or fc)")
    weight = _need(layer, "weight", at, dict)
    wshape = list(_need(weight, "shape", f"{at}.weight", list))
    expect = [out_shape[0], in_shape[0]] + ([layer["kernel"]] * 2 if kind == "conv" else [])
    if wshape != expect:
        raise UserError(f"{at}.weight: shape {wshape} disagrees with in/out shapes (expected {expect})")
    try:
        arith.check_weight_format(_need(weight, "kind", f"{at}.weight", str),
                                  _need(weight, "bits", f"{at}.weight", int))
    except ValueError as err:
        raise UserError(f"{at}.weight: {err}") from None
    _need(weight, "mem", f"{at}.weight", str)
    _check_len(_need(weight, "scale", f"{at}.weight", list), out_shape[0], f"{at}.weight", "scale")
    act = _need(layer, "act_in", at, dict)
    if _need(act, "quant", f"{at}.act_in", str) not in ("lsq", "asq"):
        raise UserError(f"{at}.act_in: quant {act['quant']!r} unknown (lsq or asq)")
    if act["quant"] == "asq":
        _validate_asq(_need(act, "asq", f"{at}.act_in", dict), f"{at}.act_in.asq", in_shape)
    req = _need(layer, "requant", at, dict)
    for key in ("M", "B"):
        _check_len(_need(req, key, f"{at}.requant", list), out_shape[0], f"{at}.requant", key)
    for key in ("S", "G", "frac_bits"):
        _need(req, key, f"{at}.requant", int)
    output = _need(req, "output", f"{at}.requant", str)
    if output not in ("codes", "y", "logits"):
        raise UserError(f"{at}.requant: output {output!r} unknown (codes, y or logits)")
    if (output == "logits") != last:
        raise UserError(f"{at}.requant: output {output!r}; only the last layer yields logits")
    for key in ("lo", "hi"):
        if key not in req or not (req[key] is None or type(req[key]) is int):
            raise UserError(f"{at}.requant: field {key!r} is missing or not an integer/null")
    _need(layer, "acc_width", at, int)
    return out_shape


def _validate_link(prev: dict, layer: dict, at: str) -> None:
    """The previous requantizer feeds this layer's input format (y + FY for ASQ, codes for LSQ)."""
    asq = layer["act_in"]["asq"] if layer["act_in"]["quant"] == "asq" else None
    output = prev["requant"]["output"]
    if (output == "y") != (asq is not None):
        raise UserError(f"{at}: act_in.quant {layer['act_in']['quant']!r} but the previous layer's "
                        f"requant.output is {output!r} (ASQ inputs take y, LSQ inputs take codes)")
    if asq is not None and asq["FY"] != prev["requant"]["frac_bits"]:
        raise UserError(f"{at}.act_in.asq: FY {asq['FY']} disagrees with the previous layer's "
                        f"requant.frac_bits {prev['requant']['frac_bits']}")
    if layer["requant"]["G"] != (asq["G"] if asq is not None else 0):
        raise UserError(f"{at}.requant: G {layer['requant']['G']} disagrees with the input's beta format")


def _validate_asq(asq: dict, at: str, in_shape: list) -> None:
    channels = in_shape[0]
    for key in ("S1", "S2", "G", "beta_min", "beta_max", "s_code", "FS", "R", "FY", "qmax", "b2"):
        _need(asq, key, at, int)
    w2 = _need(asq, "W2", at, list)
    if channels >= 8:
        w1 = _need(asq, "W1", at, list)
        _check_len(w1, channels // 4, at, "W1")
        for row in w1:
            _check_len(row, channels, at, "W1 row")
        _check_len(_need(asq, "b1", at, list), channels // 4, at, "b1")
        _check_len(w2, channels // 4, at, "W2")
    else:
        _check_len(w2, channels, at, "W2")


# ----------------------------------------------------------------------------- read / write


#: The trained default bundles the repository ships: models/digits-b<BITS>.
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"


def bundle_folder(model, bits: int) -> Path:
    """The bundle folder ``model``, or the shipped ``models/digits-b<bits>`` when ``model`` is None.

    Raises :class:`UserError` naming the folder and the fix when it holds no ``manifest.json``.
    """
    path = Path(model) if model else SHIPPED_MODELS / f"digits-b{bits}"
    if not (path / MANIFEST).is_file():
        raise UserError(f"no bundle for BITS={bits} at {path} ({MANIFEST} missing). Fix: pass "
                        f"MODEL=<bundle folder> (asqhw: --model), or make train BITS={bits} && "
                        f"make export BITS={bits}")
    return path


def read_manifest(path) -> dict:
    """Parse and validate ``manifest.json`` of the bundle folder ``path``."""
    path = Path(path)
    file = path / MANIFEST
    if not path.is_dir():
        raise UserError(f"{path}: not a bundle folder; create one with `asqhw export CHECKPOINT {path}`")
    try:
        man = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: missing; re-export the bundle with `asqhw export`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file}: not valid JSON ({err}); re-export the bundle") from None
    if not isinstance(man, dict):
        raise UserError(f"{file}: top level must be a JSON object")
    validate_manifest(man, str(file))
    return man


def read_bundle(path, vectors: bool = True) -> Bundle:
    """Read and validate the bundle folder ``path`` (weights from their ``.mem`` files)."""
    path = Path(path)
    man = read_manifest(path)
    weights = {}
    for layer in man["layers"]:
        w = layer["weight"]
        file = path / w["mem"]
        try:
            text = file.read_text(encoding="ascii")
        except FileNotFoundError:
            raise UserError(
                f"{file}: missing (layers[{layer['name']}].weight.mem); re-export the bundle"
            ) from None
        except UnicodeDecodeError:
            raise UserError(f"{file}: not a text $readmemh file; re-export the bundle") from None
        raw = parse_mem(text, w["bits"], flat_size(w["shape"]), str(file))
        weights[layer["name"]] = weight_codes(raw, w["kind"], w["bits"]).reshape(w["shape"])
    vecs = read_npz(path / man.get("vectors", VECTORS)) if vectors and man.get("vectors") else {}
    return Bundle(manifest=man, weights=weights, vectors=vecs, path=path)


def manifest_text(man: dict) -> str:
    """The canonical JSON text of a manifest (what :func:`write_bundle` writes)."""
    return json.dumps(man, indent=1) + "\n"


def write_bundle(bundle: Bundle, outdir) -> Path:
    """Write ``bundle`` to ``outdir`` atomically (the folder appears complete or not at all)."""
    validate_manifest(bundle.manifest, f"{outdir}/{MANIFEST}")
    outdir = Path(outdir)
    with atomic_dir(outdir) as tmp:
        for layer in bundle.layers:
            w = layer["weight"]
            codes = np.asarray(bundle.weights[layer["name"]])
            if list(codes.shape) != list(w["shape"]):
                raise UserError(f"{outdir}: weights of {layer['name']} have shape {list(codes.shape)}, "
                                f"manifest says {w['shape']}")
            (tmp / w["mem"]).write_text(mem_text(weight_raw(codes, w["kind"], w["bits"]), w["bits"]),
                                        encoding="ascii")
        if bundle.manifest.get("vectors"):
            (tmp / bundle.manifest["vectors"]).write_bytes(npz_bytes(bundle.vectors))
        (tmp / MANIFEST).write_text(manifest_text(bundle.manifest), encoding="utf-8")
    return outdir


# ----------------------------------------------------------------------------- hardware view


def asq_constants(layer: dict) -> arith.AsqConstants | None:
    """The :class:`golden.arith.AsqConstants` of a layer's ASQ input, or ``None`` for LSQ."""
    act = layer["act_in"]
    if act["quant"] != "asq":
        return None
    a = act["asq"]
    w1 = a.get("W1")
    return arith.AsqConstants(
        W1=None if w1 is None else np.asarray(w1, dtype=np.int64),
        b1=None if w1 is None else np.asarray(a["b1"], dtype=np.int64),
        S1=a["S1"], W2=np.asarray(a["W2"], dtype=np.int64), b2=a["b2"], S2=a["S2"], G=a["G"],
        beta_min=a["beta_min"], beta_max=a["beta_max"], s_code=a["s_code"], FS=a["FS"], R=a["R"],
        FY=a["FY"], qmax=a["qmax"],
    )


def asq_step(asq: dict) -> float:
    """The step ``s_code / 2^FS`` of an ASQ unit (its ``act_in.asq`` entry) as a float."""
    return asq["s_code"] * 2.0 ** -asq["FS"]


def layer_hw_params(bundle: Bundle, name: str) -> dict:
    """Everything the RTL of layer ``name`` needs: widths, constants, the POST table.

    Returns
    -------
    dict
        ``act_bits``, ``act_signed``, ``weight_kind``, ``weight_bits``, ``post_frac_bits``,
        ``post_table`` (list, POST only), ``fan_in``, ``product_range``, ``product_width``,
        ``acc_width``, ``M``, ``B``, ``S``, ``G``, ``M_width``, ``B_width``, ``t_width``,
        ``output`` (codes | y | logits), ``out_lo``, ``out_hi``, ``out_width``, ``out_frac_bits``,
        ``weights`` (codes, int64 array), ``mem`` (file name), ``asq`` (dict of the ASQ unit's
        constants and widths, or None), plus the layer's shape fields.
    """
    layer = bundle.layer(name)
    act, w, req = layer["act_in"], layer["weight"], layer["requant"]
    pmin, pmax = layer["product_range"]
    params = {
        "name": name, "kind": layer["kind"], "in_shape": layer["in_shape"],
        "out_shape": layer["out_shape"], "kernel": layer.get("kernel"), "stride": layer.get("stride"),
        "pad": layer.get("pad"), "act_bits": act["bits"], "act_signed": act["signed"],
        "weight_kind": w["kind"], "weight_bits": w["bits"],
        "post_frac_bits": bundle.manifest["post_frac_bits"],
        "post_table": arith.post_table(act["bits"], bundle.manifest["post_frac_bits"]).tolist()
        if w["kind"] == "post" else None,
        "fan_in": layer["fan_in"], "product_range": [pmin, pmax],
        "product_width": arith.signed_width(pmin, pmax), "acc_width": layer["acc_width"],
        "weights": bundle.weights[name], "mem": w["mem"],
    }
    params.update({k: req[k] for k in ("M", "B", "S", "G", "M_width", "B_width", "t_width", "output",
                                       "out_width")})
    params.update(out_lo=req["lo"], out_hi=req["hi"], out_frac_bits=req["frac_bits"])
    params["asq"] = dict(act["asq"]) if act["quant"] == "asq" else None
    return params
