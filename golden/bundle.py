"""The model bundle: the folder hardware is built from, as typed records (read, validate, write).

A bundle is a folder holding

- ``manifest.json``: ``format_version``, ``model``, ``scheme``, ``bits``, ``post_frac_bits``,
  ``input`` (pixel range, conv1's input step and the pixel -> code table ``lut``), ``layers`` in
  order (name, kind, shapes, kernel/stride/pad, fan-in, ``act_in`` quantizer with its ASQ unit
  constants, ``weight`` format and ``.mem`` file, product range, accumulator width, ``requant``
  constants), ``accuracy`` (float and golden on the digits test split), ``vectors`` (file name);
- one ``$readmemh`` file per weight memory, ``<layer>.weights.mem``: one raw b-bit word per line,
  ``ceil(b/4)`` hex digits, order ``(c_out, c_in, ky, kx)`` (conv) or ``(out, in)`` (fc);
- ``vectors.npz``: golden vectors (written deterministically so export -> load -> export is byte
  for byte identical);

and ``manifest.json`` records the SHA-256 of every other file (``files``), checked on reading.

The manifest is parsed and validated once, into frozen records with one attribute per field
(:class:`Manifest`, :class:`InputSpec`, :class:`Layer`, :class:`ActIn`, :class:`AsqParams`,
:class:`WeightSpec`, :class:`Requant`); ``to_dict()`` gives the JSON object back, field for field
and in the file's order, so a bundle written after reading is the same bytes. Lists are tuples in
the records. Every field is explained in ``docs/arithmetic.md``, with the range of values it may
take: fields are checked by meaning too (:func:`check_meaning`), and the files a manifest names must
lie in the bundle folder. Every problem found while reading raises :class:`asqhw.errors.UserError`
naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from asqhw.atomic import atomic_dir, old_dir, recover_dir
from asqhw.errors import UserError
from golden import arith, formats

FORMAT_VERSION = 1
#: A graph bundle's format (``golden.graph``; docs/arithmetic.md section 7).
GRAPH_FORMAT_VERSION = 2
#: Every format version this reader reads.
VERSIONS = (FORMAT_VERSION, GRAPH_FORMAT_VERSION)
MANIFEST = "manifest.json"
VECTORS = "vectors.npz"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: Activation quantizers a layer input can have, and what a requantizer can produce.
ACT_QUANTS = ("lsq", "asq")
REQUANT_OUTPUTS = ("codes", "y", "logits")


# ----------------------------------------------------------------------------- reading fields


def _need(obj: dict, key: str, where: str, types=None):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{where}: field {key!r} is missing; re-export the bundle with `asqhw export`")
    value = obj[key]
    if types is not None and (not isinstance(value, types) or (isinstance(value, bool) and types is int)):
        raise UserError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _optional(obj: dict, key: str, where: str, types):
    """``obj[key]`` when present and not null (checked against ``types``), else None."""
    if obj.get(key) is None:
        return None
    return _need(obj, key, where, types)


def _number(obj: dict, key: str, where: str) -> float:
    value = _need(obj, key, where, (int, float))
    if isinstance(value, bool):
        raise UserError(f"{where}: field {key!r} has the wrong type (bool)")
    return value


def int_tuple(obj: dict, key: str, where: str) -> tuple:
    """``obj[key]``, a list of integers, as a tuple (shared by the format-2 reader, ``golden.graph``)."""
    values = _need(obj, key, where, list)
    if not all(type(v) is int for v in values):
        raise UserError(f"{where}: field {key!r} must hold integers only")
    return tuple(values)


def check_count(values, expected: int, where: str, what: str) -> None:
    if len(values) != expected:
        raise UserError(f"{where}: {what} has {len(values)} entries, expected {expected}")


def json_value(value):
    """Records' tuples back to JSON lists (recursively); records to their dicts."""
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def _record_dict(record, omit_none: tuple = ()) -> dict:
    """The JSON object of a record: its fields in order (``omit_none``: left out when None)."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None and f.name in omit_none:
            continue
        out[f.name] = json_value(value)
    return out


def flat_size(shape) -> int:
    return int(np.prod(shape))


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class InputSpec:
    """The network input: image shape, pixel range and the pixel -> conv1 code table.

    Attributes
    ----------
    shape : tuple of int
        ``(C, H, W)`` of one image.
    pixel_max : int
        Pixels are integers ``0 .. pixel_max``.
    bits, signed, step
        conv1's input codes: width, signedness, step (float).
    lut : tuple of int
        conv1's input code of every pixel value (``pixel_max + 1`` entries).
    """

    shape: tuple
    pixel_max: int
    bits: int
    signed: bool
    step: float
    lut: tuple

    @classmethod
    def from_dict(cls, inp: dict, where: str) -> InputSpec:
        lut = _need(inp, "lut", where, list)
        pixel_max = _need(inp, "pixel_max", where, int)
        check_count(lut, pixel_max + 1, where, "lut")
        shape = int_tuple(inp, "shape", where)
        return cls(shape=shape, pixel_max=pixel_max, bits=_need(inp, "bits", where, int),
                   signed=_need(inp, "signed", where, bool), step=_number(inp, "step", where),
                   lut=tuple(lut))

    def to_dict(self) -> dict:
        return _record_dict(self)


@dataclass(frozen=True)
class AsqWidths:
    """Worst-case widths of the ASQ unit's intermediates, as the exporter proved them."""

    y: int
    z: int
    sum1: int | None
    h: int | None
    sum2: int
    beta: int
    q: int
    r: int
    yr: int

    @classmethod
    def from_dict(cls, widths: dict, where: str) -> AsqWidths:
        values = {}
        for f in fields(cls):
            values[f.name] = (_optional(widths, f.name, where, int) if f.name in ("sum1", "h")
                              else _need(widths, f.name, where, int))
        return cls(**values)

    def to_dict(self) -> dict:
        return _record_dict(self)


@dataclass(frozen=True)
class AsqParams:
    """Fixed-point constants of the ASQ unit in front of a layer (``act_in.asq``).

    ``W1``/``b1``/``FW1``/``FH`` are None when the layer has fewer than 8 input channels (the
    adapter is then a single Linear). ``channels``, ``hw``, ``FW1``, ``FH``, ``FW2``,
    ``code_shift``, ``widths`` and ``beta_seen`` are the exporter's record (None when absent);
    the arithmetic needs only :meth:`constants`.
    """

    channels: int | None
    hw: int | None
    W1: tuple | None
    b1: tuple | None
    S1: int
    FW1: int | None
    FH: int | None
    W2: tuple
    b2: int
    S2: int
    FW2: int | None
    G: int
    beta_min: int
    beta_max: int
    s_code: int
    FS: int
    R: int
    FY: int
    qmax: int
    code_shift: int | None
    widths: AsqWidths | None
    beta_seen: tuple | None

    @classmethod
    def from_dict(cls, asq: dict, where: str, in_shape) -> AsqParams:
        channels = in_shape[0]
        ints = {}
        for key in ("S1", "S2", "G", "beta_min", "beta_max", "s_code", "FS", "R", "FY", "qmax", "b2"):
            ints[key] = _need(asq, key, where, int)
        w2 = _need(asq, "W2", where, list)
        w1 = b1 = None
        if channels >= 8:
            w1 = _need(asq, "W1", where, list)
            check_count(w1, channels // 4, where, "W1")
            for row in w1:
                if not isinstance(row, list):
                    raise UserError(f"{where}: W1 rows must be lists")
                check_count(row, channels, where, "W1 row")
            b1 = _need(asq, "b1", where, list)
            check_count(b1, channels // 4, where, "b1")
            check_count(w2, channels // 4, where, "W2")
            w1, b1 = tuple(tuple(row) for row in w1), tuple(b1)
        else:
            check_count(w2, channels, where, "W2")
        widths = _optional(asq, "widths", where, dict)
        beta_seen = _optional(asq, "beta_seen", where, list)
        return cls(
            channels=_optional(asq, "channels", where, int), hw=_optional(asq, "hw", where, int),
            W1=w1, b1=b1, FW1=_optional(asq, "FW1", where, int), FH=_optional(asq, "FH", where, int),
            W2=tuple(w2), FW2=_optional(asq, "FW2", where, int),
            code_shift=_optional(asq, "code_shift", where, int),
            widths=None if widths is None else AsqWidths.from_dict(widths, f"{where}.widths"),
            beta_seen=None if beta_seen is None else tuple(beta_seen), **ints)

    def to_dict(self) -> dict:
        return _record_dict(self)

    @property
    def step(self) -> float:
        """The step ``s_code / 2^FS`` as a float."""
        return self.s_code * 2.0 ** -self.FS

    def constants(self) -> arith.AsqConstants:
        """The :class:`golden.arith.AsqConstants` the ASQ unit computes with (int64 arrays)."""
        return arith.AsqConstants(
            W1=None if self.W1 is None else np.asarray(self.W1, dtype=np.int64),
            b1=None if self.b1 is None else np.asarray(self.b1, dtype=np.int64),
            S1=self.S1, W2=np.asarray(self.W2, dtype=np.int64), b2=self.b2, S2=self.S2, G=self.G,
            beta_min=self.beta_min, beta_max=self.beta_max, s_code=self.s_code, FS=self.FS, R=self.R,
            FY=self.FY, qmax=self.qmax,
        )


@dataclass(frozen=True)
class ActIn:
    """A layer's input quantizer: ``quant`` is ``"lsq"`` or ``"asq"`` (then ``asq`` holds its unit)."""

    quant: str
    bits: int
    signed: bool
    step: float
    asq: AsqParams | None

    @property
    def is_asq(self) -> bool:
        return self.asq is not None

    def asq_constants(self) -> arith.AsqConstants | None:
        """The ASQ unit's :class:`golden.arith.AsqConstants`, or None for an LSQ input."""
        return None if self.asq is None else self.asq.constants()

    def to_dict(self) -> dict:
        return _record_dict(self)


@dataclass(frozen=True)
class WeightSpec:
    """A layer's weight memory: kind (:data:`golden.formats.WEIGHT_KINDS`), width, shape, file,
    per-channel float ``scale`` (step or alpha) and the product unit exponent ``unit_exp``."""

    kind: str
    bits: int
    shape: tuple
    mem: str
    scale: tuple
    unit_exp: int

    def to_dict(self) -> dict:
        return _record_dict(self)


@dataclass(frozen=True)
class Requant:
    """A layer's requantizer: ``t = acc*M*g + (B << G)``, ``out = clamp(rshift_round(t, S+G), lo, hi)``.

    ``output`` is ``"codes"``, ``"y"`` (for the next layer's ASQ unit, ``frac_bits`` = its FY) or
    ``"logits"`` (``frac_bits`` = FL); ``lo``/``hi`` are None where there is no clamp.
    """

    M: tuple
    B: tuple
    S: int
    G: int
    output: str
    lo: int | None
    hi: int | None
    frac_bits: int
    M_width: int
    B_width: int
    t_width: int
    out_width: int

    def to_dict(self) -> dict:
        return _record_dict(self)


@dataclass(frozen=True)
class Layer:
    """One conv or fc layer of the bundle (``kernel``/``stride``/``pad`` are None for fc)."""

    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    kernel: int | None
    stride: int | None
    pad: int | None
    fan_in: int
    act_in: ActIn
    weight: WeightSpec
    product_range: tuple
    acc_width: int
    requant: Requant

    @property
    def is_conv(self) -> bool:
        return self.kind == "conv"

    def to_dict(self) -> dict:
        return _record_dict(self, omit_none=("kernel", "stride", "pad"))


class ManifestText:
    """What both manifest records (:class:`Manifest`, :class:`golden.graph.GraphManifest`) share: the
    checksum of their JSON object and its canonical text, both from their ``to_dict``."""

    def digest(self) -> str:
        """SHA-256 of this manifest's JSON object without its ``sha256`` field, keys sorted and no
        spaces (so the file's layout and key order do not matter, its values do)."""
        text = json.dumps(dataclasses.replace(self, sha256=None).to_dict(), sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def text(self) -> str:
        """The canonical JSON text (what :func:`write_bundle` writes)."""
        return json.dumps(self.to_dict(), indent=1) + "\n"


@dataclass(frozen=True)
class Manifest(ManifestText):
    """The parsed ``manifest.json``: every field, validated (see :meth:`from_dict`).

    ``accuracy`` is the exporter's free-form record (a dict); ``vectors`` the vectors file name or
    None; ``files`` the SHA-256 (hex) of every file the manifest names, by name, as
    :func:`write_bundle` wrote them, and ``sha256`` that of the manifest itself (:meth:`digest`:
    its JSON object without this field), so a changed constant is refused rather than computed
    with (both None in a manifest not yet written).
    """

    format_version: int
    model: str
    scheme: str
    bits: int
    post_frac_bits: int
    input: InputSpec
    layers: tuple
    accuracy: dict
    vectors: str | None = None
    files: dict | None = None
    sha256: str | None = None

    def weight_specs(self) -> list:
        """``(layer name, WeightSpec)`` of every layer, in order (the weight memories)."""
        return [(layer.name, layer.weight) for layer in self.layers]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The JSON object, field for field in the file's order."""
        return _record_dict(self, omit_none=("vectors", "files", "sha256"))

    @classmethod
    def from_dict(cls, man: dict, where: str = MANIFEST) -> Manifest:
        """Check format version, field presence and types, and that every shape agrees with its
        neighbours; ``where`` names the file in errors."""
        return parse_manifest(man, where)


@dataclass(frozen=True)
class Bundle:
    """A model bundle in memory.

    Attributes
    ----------
    manifest : Manifest
        The parsed, validated ``manifest.json``.
    weights : dict of str -> int64 array
        Per layer, the weight codes shaped as ``layer.weight.shape``: signed values for ``int``
        weights, raw sign-magnitude codes (``0 .. 2^b - 1``) for ``pot``/``post``.
    vectors : dict of str -> array
        Golden vectors (see :func:`golden.model.run` for the keys); may be empty.
    path : Path or None
        Where it was read from.
    """

    manifest: Manifest
    weights: dict
    vectors: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def layers(self) -> tuple:
        return self.manifest.layers

    def layer(self, name: str) -> Layer:
        return self.manifest.layer(name)




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
    return arith.int_to_raw(codes, bits) if kind == formats.INT else np.asarray(codes, dtype=np.int64)


def weight_codes(raw: np.ndarray, kind: str, bits: int) -> np.ndarray:
    """Inverse of :func:`weight_raw`."""
    return arith.raw_to_int(raw, bits) if kind == formats.INT else np.asarray(raw, dtype=np.int64)


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


def read_npz(path: Path, data: bytes | None = None) -> dict:
    """The arrays of the ``.npz`` file ``path`` (or of its bytes ``data``, already read)."""
    try:
        # Our own file object: np.load leaks the file it opened when the zip is unreadable.
        source = io.BytesIO(data) if data is not None else open(path, "rb")
        with source as file, np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path}: missing; re-export the bundle with `asqhw export`") from None
    except Exception as err:  # zipfile.BadZipFile, ValueError from a truncated array, ...
        raise UserError(f"{path}: not a readable .npz ({err}); re-export the bundle") from None

# ----------------------------------------------------------------------------- manifest checks


def parse_any_manifest(man: dict, where: str = MANIFEST):
    """A manifest of any format this reader reads: a :class:`Manifest` (format 1, a chain) or a
    :class:`golden.graph.GraphManifest` (format 2, a graph)."""
    version = man.get("format_version") if isinstance(man, dict) else None
    if type(version) is int and version == GRAPH_FORMAT_VERSION:
        from golden.graph import parse_graph_manifest

        return parse_graph_manifest(man, where)
    return parse_manifest(man, where)


def parse_manifest(man: dict, where: str = MANIFEST) -> Manifest:
    """Validate the JSON object of a manifest and return its :class:`Manifest`.

    Checks the format version, the presence and type of every field, that every shape agrees with
    its neighbours and that each requantizer feeds the next layer's input format. Raises
    :class:`asqhw.errors.UserError` naming ``where`` and the field.
    """
    if not isinstance(man, dict):
        raise UserError(f"{where}: top level must be a JSON object")
    version = _need(man, "format_version", where, int)
    if version != FORMAT_VERSION:
        raise UserError(
            f"{where}: format_version {version} is not supported (this asqhw reads "
            f"{' and '.join(map(str, VERSIONS))}); re-export the bundle with this version's `asqhw export`"
        )
    model, scheme = (_need(man, key, where, str) for key in ("model", "scheme"))
    bits = _need(man, "bits", where, int)
    if bits not in formats.INT_BITS:
        raise UserError(f"{where}: bits {bits} outside {formats.range_text(formats.INT_BITS)}")
    post_frac_bits = _need(man, "post_frac_bits", where, int)
    inp = InputSpec.from_dict(_need(man, "input", where, dict), f"{where}: input")
    raw_layers = _need(man, "layers", where, list)
    if not raw_layers:
        raise UserError(f"{where}: layers is empty")
    layers = []
    prev_shape = list(inp.shape)
    for i, raw in enumerate(raw_layers):
        at = f"{where}: layers[{i}]"
        layer = _parse_layer(raw, at, prev_shape, last=i == len(raw_layers) - 1)
        if layers:
            _check_link(layers[-1], layer, at)
        layers.append(layer)
        prev_shape = list(layer.out_shape)
    accuracy = _need(man, "accuracy", where, dict)
    vectors = _optional(man, "vectors", where, str)
    files = _optional(man, "files", where, dict)
    sha256 = _optional(man, "sha256", where, str)
    manifest = Manifest(format_version=version, model=model, scheme=scheme, bits=bits,
                        post_frac_bits=post_frac_bits, input=inp, layers=tuple(layers),
                        accuracy=accuracy, vectors=vectors, files=files, sha256=sha256)
    check_meaning(manifest, where)
    return manifest


def _parse_layer(layer: dict, at: str, prev_shape: list, last: bool) -> Layer:
    if not isinstance(layer, dict):
        raise UserError(f"{at}: a layer must be a JSON object")
    name = _need(layer, "name", at, str)
    at = f"{at} ({name})"
    kind = _need(layer, "kind", at, str)
    in_shape = list(int_tuple(layer, "in_shape", at))
    out_shape = list(int_tuple(layer, "out_shape", at))
    kernel = stride = pad = None
    if kind == "fc":
        if len(out_shape) != 1:
            raise UserError(f"{at}: out_shape of an fc layer is (C,)")
        if in_shape != [flat_size(prev_shape)]:
            raise UserError(f"{at}: in_shape {in_shape} disagrees with the previous output {prev_shape}")
    elif kind == "conv":
        if in_shape != prev_shape:
            raise UserError(f"{at}: in_shape {in_shape} disagrees with the previous output {prev_shape}")
        kernel, stride, pad = (_need(layer, f, at, int) for f in ("kernel", "stride", "pad"))
        _within(kernel, 1, None, at, "kernel")
        _within(stride, 1, None, at, "stride")
        _within(pad, 0, kernel - 1, at, "pad", " (less than the kernel)")
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise UserError(f"{at}: in_shape and out_shape of a conv layer are (C, H, W)")
        h_out = (in_shape[1] + 2 * pad - kernel) // stride + 1
        w_out = (in_shape[2] + 2 * pad - kernel) // stride + 1
        if out_shape[1:] != [h_out, w_out]:
            raise UserError(f"{at}: out_shape {out_shape} disagrees with kernel/stride/pad ({h_out}x{w_out})")
    else:
        raise UserError(f"{at}: kind {kind!r} unknown (conv or fc)")
    weight = _parse_weight(_need(layer, "weight", at, dict), f"{at}.weight", in_shape, out_shape, kernel)
    act = _parse_act_in(_need(layer, "act_in", at, dict), f"{at}.act_in", in_shape)
    requant = _parse_requant(_need(layer, "requant", at, dict), f"{at}.requant", out_shape, last)
    acc_width = _need(layer, "acc_width", at, int)
    product_range = int_tuple(layer, "product_range", at)
    check_count(product_range, 2, at, "product_range")
    return Layer(name=name, kind=kind, in_shape=tuple(in_shape), out_shape=tuple(out_shape),
                 kernel=kernel, stride=stride, pad=pad, fan_in=_need(layer, "fan_in", at, int),
                 act_in=act, weight=weight, product_range=product_range, acc_width=acc_width,
                 requant=requant)


def _parse_weight(weight: dict, at: str, in_shape: list, out_shape: list, kernel) -> WeightSpec:
    wshape = list(int_tuple(weight, "shape", at))
    expect = [out_shape[0], in_shape[0]] + ([kernel] * 2 if kernel is not None else [])
    if wshape != expect:
        raise UserError(f"{at}: shape {wshape} disagrees with in/out shapes (expected {expect})")
    kind, bits = _need(weight, "kind", at, str), _need(weight, "bits", at, int)
    try:
        formats.check_weight_format(kind, bits)
    except formats.WidthError as err:
        raise formats.WidthError(f"{at}: {err}") from None
    mem = _need(weight, "mem", at, str)
    scale = _need(weight, "scale", at, list)
    check_count(scale, out_shape[0], at, "scale")
    return WeightSpec(kind=kind, bits=bits, shape=tuple(wshape), mem=mem, scale=tuple(scale),
                      unit_exp=_need(weight, "unit_exp", at, int))


def _parse_act_in(act: dict, at: str, in_shape: list) -> ActIn:
    quant = _need(act, "quant", at, str)
    if quant not in ACT_QUANTS:
        raise UserError(f"{at}: quant {quant!r} unknown (lsq or asq)")
    asq = None
    if quant == "asq":
        asq = AsqParams.from_dict(_need(act, "asq", at, dict), f"{at}.asq", in_shape)
    return ActIn(quant=quant, bits=_need(act, "bits", at, int), signed=_need(act, "signed", at, bool),
                 step=_number(act, "step", at), asq=asq)


def _parse_requant(req: dict, at: str, out_shape: list, last: bool) -> Requant:
    lists = {}
    for key in ("M", "B"):
        lists[key] = int_tuple(req, key, at)
        check_count(lists[key], out_shape[0], at, key)
    ints = {key: _need(req, key, at, int) for key in ("S", "G", "frac_bits")}
    output = _need(req, "output", at, str)
    if output not in REQUANT_OUTPUTS:
        raise UserError(f"{at}: output {output!r} unknown (codes, y or logits)")
    if (output == "logits") != last:
        raise UserError(f"{at}: output {output!r}; only the last layer yields logits")
    for key in ("lo", "hi"):
        if key not in req or not (req[key] is None or type(req[key]) is int):
            raise UserError(f"{at}: field {key!r} is missing or not an integer/null")
    widths = {key: _need(req, key, at, int) for key in ("M_width", "B_width", "t_width", "out_width")}
    return Requant(output=output, lo=req["lo"], hi=req["hi"], **lists, **ints, **widths)


def _check_link(prev: Layer, layer: Layer, at: str) -> None:
    """The previous requantizer feeds this layer's input format (y + FY for ASQ, codes for LSQ)."""
    asq = layer.act_in.asq
    output = prev.requant.output
    if (output == "y") != (asq is not None):
        raise UserError(f"{at}: act_in.quant {layer.act_in.quant!r} but the previous layer's "
                        f"requant.output is {output!r} (ASQ inputs take y, LSQ inputs take codes)")
    if asq is not None and asq.FY != prev.requant.frac_bits:
        raise UserError(f"{at}.act_in.asq: FY {asq.FY} disagrees with the previous layer's "
                        f"requant.frac_bits {prev.requant.frac_bits}")
    if layer.requant.G != (asq.G if asq is not None else 0):
        raise UserError(f"{at}.requant: G {layer.requant.G} disagrees with the input's beta format")
    if output == "codes":
        act = layer.act_in
        _within(act.bits, formats.MIN_BITS, formats.MAX_BITS, f"{at}.act_in", "bits")
        if act.signed or prev.requant.hi != (1 << act.bits) - 1 or prev.requant.lo != 0:
            raise UserError(f"{at}.act_in: bits {act.bits} (signed {act.signed}) disagrees with the "
                            f"previous layer's requant lo..hi {prev.requant.lo}..{prev.requant.hi}")


# ----------------------------------------------------------------------------- meaning checks

#: Largest shift, fraction or width a bundle field may have: the golden model computes in int64.
_INT64_BITS = 63


def _within(value, lo, hi, at: str, key: str, why: str = "") -> None:
    """Refuse ``value`` (field ``key`` of ``at``) outside ``lo .. hi`` (None: unbounded)."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"{'-inf' if lo is None else lo}..{'inf' if hi is None else hi}"
        raise UserError(f"{at}: field {key!r} is {value!r}, outside {span}{why}; re-export the bundle")


def _equal(value, expected, at: str, key: str, why: str) -> None:
    if value != expected:
        raise UserError(f"{at}: field {key!r} is {value!r}, expected {expected!r} ({why}); "
                        "re-export the bundle")


def _all_within(values, lo, hi, at: str, key: str, why: str = "") -> None:
    for i, value in enumerate(values):
        _within(value, lo, hi, at, f"{key}[{i}]", why)


def _all_ints(values, at: str, key: str) -> None:
    for value in values:
        if type(value) is not int:
            raise UserError(f"{at}: field {key!r} must hold integers only")


def _all_finite(values, at: str, key: str, positive: bool = False) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (positive and value <= 0):
            raise UserError(f"{at}: field {key!r} must hold finite{' positive' if positive else ''} "
                            f"numbers ({value!r}); re-export the bundle")


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(lo, hi)`` of ``bits``-bit codes (two's complement when ``signed``)."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def check_meaning(man: Manifest, where: str = MANIFEST) -> None:
    """Check every field's value against its meaning (docs/arithmetic.md): widths, shifts, ranges,
    the proved product range and accumulator width, and the model/scheme/BITS the bundle claims.

    :func:`parse_manifest` has checked presence, types and shapes; this refuses a manifest whose
    values, though well typed, would make the golden model or the hardware compute nonsense.
    """
    _check_file_names(man, where)
    if man.model not in formats.NETWORK_NAMES:
        raise UserError(f"{where}: field 'model' is {man.model!r}, not a known network "
                        f"({', '.join(formats.NETWORK_NAMES)})")
    if man.scheme not in formats.BUNDLE_SCHEMES:
        raise UserError(f"{where}: field 'scheme' is {man.scheme!r}, not a quantization scheme "
                        f"({', '.join(formats.BUNDLE_SCHEMES)})")
    _within(man.post_frac_bits, 0, formats.MAX_POST_FRAC_BITS, where, "post_frac_bits")
    _check_input(man.input, f"{where}: input")
    names = [layer.name for layer in man.layers]
    if not all(names) or len(set(names)) != len(names):
        raise UserError(f"{where}: layer names {names} must be distinct and not empty")
    act_quant, weight_kind = formats.BUNDLE_SCHEMES[man.scheme]
    for i, layer in enumerate(man.layers):
        middle = 0 < i < len(man.layers) - 1
        _check_layer(man, layer, f"{where}: layers[{i}] ({layer.name})", middle, act_quant, weight_kind)
    first = man.layers[0].act_in
    if (first.quant, first.bits, first.signed) != ("lsq", man.input.bits, man.input.signed):
        raise UserError(f"{where}: layers[0].act_in disagrees with input (quant lsq, bits, signed)")


def named_files(man: Manifest) -> list:
    """The names of the files ``man`` names: every layer's ``.mem``, then the vectors file."""
    return [layer.weight.mem for layer in man.layers] + ([man.vectors] if man.vectors else [])


def _check_file_names(man: Manifest, where: str) -> None:
    check_file_names(named_files(man), man.files, where)


def check_file_names(names: list, files: dict | None, where: str) -> None:
    """Every named file is a plain name inside the bundle folder, named once, and ``files`` (the
    recorded checksums, when present) lists exactly them."""
    for name in names:
        if not name or "/" in name or "\\" in name or name in (".", "..", MANIFEST):
            raise UserError(f"{where}: file name {name!r} is not a plain file name in the bundle "
                            "folder (no folders, no '..', not absolute); re-export the bundle")
    if len(set(names)) != len(names):
        raise UserError(f"{where}: a file name is used twice ({names}); re-export the bundle")
    if files is not None:
        if sorted(files) != sorted(names):
            raise UserError(f"{where}: field 'files' lists {sorted(files)}, the manifest names "
                            f"{sorted(names)}; re-export the bundle")
        for name, digest in files.items():
            if not isinstance(digest, str) or len(digest) != 64 \
                    or any(c not in "0123456789abcdef" for c in digest):
                raise UserError(f"{where}: field 'files' entry {name!r} is not a SHA-256 hex digest")


def _check_input(inp: InputSpec, at: str) -> None:
    check_count(inp.shape, 3, at, "shape")
    _all_within(inp.shape, 1, None, at, "shape")
    _within(inp.pixel_max, 1, 255, at, "pixel_max", " (pixels are bytes)")
    _within(inp.bits, formats.MIN_BITS, formats.MAX_BITS, at, "bits")
    _all_finite([inp.step], at, "step", positive=True)
    _all_ints(inp.lut, at, "lut")
    lo, hi = code_range(inp.bits, inp.signed)
    _all_within(inp.lut, lo, hi, at, "lut", f" (the {inp.bits}-bit input codes)")
    if len(set(inp.lut)) != len(inp.lut):
        raise UserError(f"{at}: field 'lut' maps two pixel values to one code (must be distinct)")


def _check_layer(man: Manifest, layer: Layer, at: str, middle: bool, act_quant: str,
                 weight_kind: str) -> None:
    _all_within(layer.in_shape, 1, None, at, "in_shape")
    _all_within(layer.out_shape, 1, None, at, "out_shape")
    _equal(layer.fan_in, flat_size(layer.weight.shape[1:]), at, "fan_in", "inputs per output")
    act, w = layer.act_in, layer.weight
    _within(act.bits, formats.MIN_BITS, formats.MAX_BITS, f"{at}.act_in", "bits")
    _all_finite([act.step], f"{at}.act_in", "step", positive=True)
    _all_finite(w.scale, f"{at}.weight", "scale", positive=True)
    _within(w.unit_exp, -_INT64_BITS, _INT64_BITS, f"{at}.weight", "unit_exp")
    if middle:
        _equal(act.bits, man.bits, f"{at}.act_in", "bits", f"the manifest's bits {man.bits}")
        _equal(w.bits, man.bits, f"{at}.weight", "bits", f"the manifest's bits {man.bits}")
        _equal(act.quant, act_quant, f"{at}.act_in", "quant", f"scheme {man.scheme!r}")
        _equal(w.kind, weight_kind, f"{at}.weight", "kind", f"scheme {man.scheme!r}")
    if act.asq is not None:
        if act.signed:
            raise UserError(f"{at}.act_in: field 'signed' is true; ASQ codes are unsigned")
        _check_asq(act.asq, act.bits, f"{at}.act_in.asq")
        act_lo, act_hi = 0, act.asq.qmax
    else:
        act_lo, act_hi = code_range(act.bits, act.signed)
    if w.kind != formats.INT and act_lo < 0:
        raise UserError(f"{at}: {w.kind} weights need unsigned activations (act_in.signed is true)")
    proved = arith.product_range(act_lo, act_hi, w.kind, w.bits, man.post_frac_bits)
    _equal(list(layer.product_range), list(proved), at, "product_range",
           "every activation code times every weight code")
    _equal(layer.acc_width, arith.acc_width(layer.fan_in, *proved), at, "acc_width",
           "the proved width of fan_in products")
    _check_requant(layer.requant, layer, f"{at}.requant")


def _check_asq(asq: AsqParams, bits: int, at: str) -> None:
    _equal(asq.G, formats.BETA_FRAC, at, "G", "the beta code's fractional bits")
    _equal(asq.qmax, (1 << bits) - 1, at, "qmax", f"the largest unsigned {bits}-bit code")
    _within(asq.s_code, 1, (1 << formats.STEP_BITS) - 1, at, "s_code", f" ({formats.STEP_BITS}-bit step)")
    _within(asq.FS, 0, _INT64_BITS, at, "FS")
    _within(asq.FY, 0, formats.Y_BITS, at, "FY")
    _within(asq.beta_min, 1, formats.BETA_MAX, at, "beta_min", f" ({formats.BETA_BITS}-bit beta)")
    _within(asq.beta_max, asq.beta_min, formats.BETA_MAX, at, "beta_max",
            f" (beta_min .. the {formats.BETA_BITS}-bit beta)")
    _equal(asq.R, (asq.s_code << asq.G).bit_length() + formats.RECIP_BITS, at, "R",
           f"bitlen(s_code * 2^G) + {formats.RECIP_BITS}: the reciprocal's width")
    code_shift = asq.FY + asq.R - asq.FS - asq.G
    _within(code_shift, 0, _INT64_BITS, at, "code_shift", " (FY + R - FS - G)")
    if asq.code_shift is not None:
        _equal(asq.code_shift, code_shift, at, "code_shift", "FY + R - FS - G")
    w_lo, w_hi = code_range(formats.ADAPTER_W_BITS, True)
    rows = asq.W1 if asq.W1 is not None else ()
    for r, row in enumerate(rows):
        _all_ints(row, at, f"W1[{r}]")
        _all_within(row, w_lo, w_hi, at, f"W1[{r}]", f" ({formats.ADAPTER_W_BITS}-bit adapter weights)")
    _all_ints(asq.W2, at, "W2")
    _all_within(asq.W2, w_lo, w_hi, at, "W2", f" ({formats.ADAPTER_W_BITS}-bit adapter weights)")
    if asq.b1 is not None:
        _all_ints(asq.b1, at, "b1")
        _all_within(asq.b1, -(1 << 40), 1 << 40, at, "b1")
    _within(asq.b2, -(1 << 40), 1 << 40, at, "b2")
    _within(asq.S1, 0, _INT64_BITS, at, "S1")
    _within(asq.S2, 0, _INT64_BITS, at, "S2")
    if asq.beta_seen is not None:
        check_count(asq.beta_seen, 2, at, "beta_seen")
        _all_finite(asq.beta_seen, at, "beta_seen")


def _check_requant(req: Requant, layer: Layer, at: str) -> None:
    asq = layer.act_in.asq
    _equal(req.G, formats.BETA_FRAC if asq is not None else 0, at, "G",
           "the fractional bits of the input's beta code, 0 for an LSQ input")
    _within(req.M_width, 1, formats.M_BITS, at, "M_width", f" (the {formats.M_BITS}-bit multiplier)")
    _all_within(req.M, *code_range(req.M_width, True), at, "M", f" ({req.M_width}-bit M_width)")
    _within(req.B_width, 1, _INT64_BITS - req.G, at, "B_width")
    _all_within(req.B, *code_range(req.B_width, True), at, "B", f" ({req.B_width}-bit B_width)")
    _within(req.S, 0, _INT64_BITS - req.G, at, "S")
    _within(req.frac_bits, 0, 32, at, "frac_bits")
    _within(req.t_width, 1, 64, at, "t_width")
    _within(req.out_width, 1, formats.OUT_WIDTH, at, "out_width")
    if (req.lo is None) != (req.hi is None) or (req.lo is None) != (req.output == "logits"):
        raise UserError(f"{at}: fields 'lo'/'hi' must both be null for logits and both integers "
                        "otherwise")
    if req.lo is not None:
        _within(req.lo, 0, req.hi, at, "lo", " (0 .. hi)")
        _within(req.hi, req.lo, (1 << req.out_width) - 1, at, "hi", f" (lo .. the {req.out_width}-bit output)")
    if req.output == "y":
        _equal(req.hi, formats.Y_MAX, at, "hi", f"y is {formats.Y_BITS} bits")
    if req.output == "logits":
        _equal(req.frac_bits, formats.LOGIT_FRAC, at, "frac_bits", "the logits' fraction")


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


def read_manifest(path):
    """Parse and validate ``manifest.json`` of the bundle folder ``path``: a :class:`Manifest`
    (format 1) or a :class:`golden.graph.GraphManifest` (format 2)."""
    path = Path(path)
    file = path / MANIFEST
    if not path.exists() and old_dir(path).is_dir():
        # An export killed between its two renames left the previous bundle as .NAME.old: put it back.
        try:
            recover_dir(path)
        except OSError as err:
            raise UserError(f"{path}: missing; {old_dir(path)} holds the bundle an interrupted export was "
                            f"replacing, and restoring it failed ({err.strerror}): rename it to {path.name}") from None
    if not path.is_dir():
        raise UserError(f"{path}: not a bundle folder; create one with `asqhw export CHECKPOINT {path}`")
    try:
        man = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: missing; re-export the bundle with `asqhw export`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file}: not valid JSON ({err}); re-export the bundle") from None
    manifest = parse_any_manifest(man, str(file))
    # After the checks by meaning (their errors name the field), whether anything changed at all.
    for key in ("files", "sha256"):
        if getattr(manifest, key) is None:
            raise UserError(f"{file}: field {key!r} (the checksums export writes) is missing; "
                            "re-export the bundle with `asqhw export`")
    if manifest.digest() != manifest.sha256:
        raise UserError(f"{file}: file {MANIFEST} changed since export (its content disagrees with "
                        "its field 'sha256'); re-export the bundle with `asqhw export`")
    return manifest


def _bundle_file(path: Path, name: str, field_name: str) -> bytes:
    """The bytes of the file ``name`` of the bundle folder ``path``: refused unless it is a regular
    file inside the folder (a link pointing out of it is refused too)."""
    file = path / name
    try:
        inside = file.resolve().is_relative_to(path.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise UserError(f"{file}: {field_name} resolves outside the bundle folder {path}; re-export the bundle")
    if file.is_dir():
        raise UserError(f"{file}: {field_name} is a folder, not a file; re-export the bundle")
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{file}: missing ({field_name}); re-export the bundle") from None
    except OSError as err:
        raise UserError(f"{file}: cannot be read ({field_name}: {err.strerror})") from None


def _check_digest(man: Manifest, file: Path, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != man.files[file.name]:
        raise UserError(f"{file}: file {file.name} changed since export (its SHA-256 disagrees "
                        f"with the manifest's 'files'); re-export the bundle with `asqhw export`")


def read_bundle(path, vectors: bool = True):
    """Read and validate the bundle folder ``path`` (weights from their ``.mem`` files): a
    :class:`Bundle` for format 1, a :class:`golden.graph.GraphBundle` for format 2.

    Every file the manifest names must lie in the folder and have the SHA-256 the manifest records;
    the vectors (when read) must hold one entry per test image (:func:`check_vectors`).
    """
    path = Path(path)
    man = read_manifest(path)
    weights = {}
    specs = man.weight_specs()
    for name, w in specs:
        file = path / w.mem
        data = _bundle_file(path, w.mem, f"{'graph node' if man.format_version == 2 else 'layers'}[{name}].weight.mem")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise UserError(f"{file}: not a text $readmemh file; re-export the bundle") from None
        # The format first (its errors say more), then whether the words are the exported ones.
        raw = parse_mem(text, w.bits, flat_size(w.shape), str(file))
        _check_digest(man, file, data)
        weights[name] = weight_codes(raw, w.kind, w.bits).reshape(w.shape)
    vecs = {}
    if vectors and man.vectors:
        file = path / man.vectors
        data = _bundle_file(path, man.vectors, "vectors")
        vecs = read_npz(file, data)
        if man.format_version == GRAPH_FORMAT_VERSION:
            from golden.graph import check_graph_vectors

            check_graph_vectors(man, vecs, str(file))
        else:
            check_vectors(man, vecs, str(file))
        _check_digest(man, file, data)
    if man.format_version == GRAPH_FORMAT_VERSION:
        from golden.graph import GraphBundle

        return GraphBundle(manifest=man, weights=weights, vectors=vecs, path=path)
    return Bundle(manifest=man, weights=weights, vectors=vecs, path=path)


def vector_shapes(man: Manifest, n: int) -> dict:
    """The shape of every golden vector of ``n`` images (the keys :func:`golden.model.vector_arrays`
    writes, with the exporter's ``pixels`` and ``float_pred``)."""
    shapes = {"pixels": (n, *man.input.shape), "labels": (n,), "float_pred": (n,), "pred": (n,),
              "logits": (n, man.layers[-1].out_shape[0])}
    for layer in man.layers:
        shapes[f"{layer.name}.in"] = (n, *layer.in_shape)
        if layer.act_in.is_asq:
            shapes[f"{layer.name}.beta"] = (n,)
    return shapes


def check_vectors(man: Manifest, vecs: dict, where: str) -> None:
    """The golden vectors hold exactly the expected keys, integer arrays of the expected shapes,
    one entry per test image (``accuracy["n_test"]`` when the manifest records it)."""
    n = man.accuracy.get("n_test")
    if type(n) is not int:
        n = np.shape(vecs["pixels"])[0] if "pixels" in vecs and np.ndim(vecs["pixels"]) else 0
    shapes = vector_shapes(man, n)
    if sorted(vecs) != sorted(shapes):
        raise UserError(f"{where}: keys {sorted(vecs)}, expected {sorted(shapes)}; re-export the bundle")
    check_vector_arrays(vecs, shapes, man.input.pixel_max, where, " (one entry per test image)")


def check_vector_arrays(vecs: dict, shapes: dict, pixel_max: int, where: str, shape_note: str = "") -> None:
    """Every array of ``vecs`` (keys already equal to ``shapes``') integer and of its shape, and the
    pixels within ``0..pixel_max``; a one-line UserError naming ``where`` otherwise (both formats)."""
    for key, shape in shapes.items():
        arr = vecs[key]
        if arr.dtype.kind not in "iu" or arr.shape != shape:
            raise UserError(f"{where}: {key!r} is {arr.dtype} {list(arr.shape)}, expected integers of "
                            f"shape {list(shape)}{shape_note}; re-export the bundle")
    pixels = vecs["pixels"]
    if pixels.size and (pixels.min() < 0 or pixels.max() > pixel_max):
        raise UserError(f"{where}: 'pixels' outside 0..{pixel_max}; re-export the bundle")


def write_bundle(bundle: Bundle, outdir) -> Path:
    """Write ``bundle`` to ``outdir`` atomically (the folder appears complete or not at all).

    The manifest is validated again from its JSON object first, so what is written reads back.
    """
    outdir = Path(outdir)
    contents = {}
    for name, w in bundle.manifest.weight_specs():
        codes = np.asarray(bundle.weights[name])
        if list(codes.shape) != list(w.shape):
            raise UserError(f"{outdir}: weights of {name} have shape {list(codes.shape)}, "
                            f"manifest says {list(w.shape)}")
        contents[w.mem] = mem_text(weight_raw(codes, w.kind, w.bits), w.bits).encode("ascii")
    if bundle.manifest.vectors:
        contents[bundle.manifest.vectors] = npz_bytes(bundle.vectors)
    files = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    manifest = parse_any_manifest(dataclasses.replace(bundle.manifest, files=files, sha256=None).to_dict(),
                                  f"{outdir}/{MANIFEST}")
    text = dataclasses.replace(manifest, sha256=manifest.digest()).text()
    with atomic_dir(outdir) as tmp:
        for name, data in contents.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
    return outdir
