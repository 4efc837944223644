"""Bad bundles and checkpoints: every one refused with one line naming the field, never a traceback
or a silent result.

Each case here was once read without a word (and gave a wrong accuracy or a huge design) or ended
in a ZeroDivision/Overflow/Index/TypeError. Reading (:func:`golden.bundle.read_bundle`) must now
raise :class:`asqhw.errors.UserError` naming the field; ``asqhw eval --golden`` and ``asqhw verilog``
must print one ``asqhw: error:`` line and exit with status 2.

Every manifest case runs on both formats: the shipped digits-b3 (format 2, a graph) and the same
network as a format-1 chain (``tests/data/digits-b3-format1``, the format users' older bundles have).
A case names its field by the format-1 path (``layers[i]...``); on a graph it is the same field of
the node ``graph.nodes[i + 1]`` (node 0 is the input).
"""

import hashlib
import json
import shutil

import numpy as np
import pytest

from asqhw.cli import main
from asqhw.errors import UserError
from golden import formats
from golden.bundle import MANIFEST, npz_bytes, parse_any_manifest, read_bundle, read_npz

BUNDLE = "digits-b3"  # ASQ+POST, 3 bits: conv1 (LSQ int8), conv2/conv3 (ASQ, POST), fc (logits)


def original(fmt: int, shipped_bundle, format1_bundle):
    """The bundle folder of format ``fmt``: the shipped digits-b3 (2) or its format-1 chain (1)."""
    return shipped_bundle(BUNDLE) if fmt == 2 else format1_bundle


@pytest.fixture(params=[2, 1], ids=["format2", "format1"])
def bundle_copy(request, tmp_path, shipped_bundle, format1_bundle):
    path = tmp_path / BUNDLE
    shutil.copytree(original(request.param, shipped_bundle, format1_bundle), path)
    return path


def edit_manifest(path, edit) -> None:
    """Apply ``edit`` to the JSON object of ``path``'s manifest and write it back."""
    man = json.loads((path / MANIFEST).read_text())
    edit(man)
    (path / MANIFEST).write_text(json.dumps(man, indent=1))


def at(man: dict, keys: tuple) -> tuple:
    """``keys`` (a format-1 path) in ``man``'s format: ``("layers", i, ...)`` is
    ``("graph", "nodes", i + 1, ...)`` in a graph manifest."""
    if keys[:1] == ("layers",) and "graph" in man:
        return ("graph", "nodes", keys[1] + 1, *keys[2:]) if len(keys) > 1 else ("graph", "nodes")
    return keys


def get_at(man: dict, keys: tuple):
    """``man[k0][k1]...[kn]`` (``keys`` a format-1 path, :func:`at`)."""
    obj = man
    for key in at(man, keys):
        obj = obj[key]
    return obj


def set_at(man: dict, keys: tuple, value) -> None:
    """``man[k0][k1]...[kn] = value`` (``keys`` a format-1 path, :func:`at`)."""
    keys = at(man, keys)
    get_at(man, keys[:-1])[keys[-1]] = value


def rehash(path, name: str) -> None:
    """Record the current SHA-256 of the bundle file ``name`` in the manifest, and the manifest's
    own (a file changed on purpose, so that its content, not its checksum, has to be found wrong)."""
    digest = hashlib.sha256((path / name).read_bytes()).hexdigest()

    def edit(man):
        man["files"][name] = digest
        man["sha256"] = parse_any_manifest(man).digest()

    edit_manifest(path, edit)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("asqhw: error: "), err
    assert "Traceback" not in err and sum("error" in ln.lower() for ln in lines) == 1, err
    return lines[-1]


CONV2, CONV3, FC = ("layers", 1), ("layers", 2), ("layers", 3)
ASQ2 = (*CONV2, "act_in", "asq")
# (case, keys into the manifest, value, what the error must name)
MEANING_CASES = [
    ("stride 0", (*CONV2, "stride"), 0, r"'stride' is 0"),
    ("kernel 0", (*CONV2, "kernel"), 0, r"'kernel' is 0"),
    ("pad -1", (*CONV2, "pad"), -1, r"'pad' is -1"),
    ("post_frac_bits -1", ("post_frac_bits",), -1, r"'post_frac_bits' is -1"),
    ("post_frac_bits 17", ("post_frac_bits",), 17, r"'post_frac_bits' is 17"),
    ("ASQ R -1", (*ASQ2, "R"), -1, r"'R' is -1"),
    ("ASQ R 1000", (*ASQ2, "R"), 1000, r"'R' is 1000"),
    ("ASQ G 40", (*ASQ2, "G"), 40, r"G"),
    ("ASQ s_code 0", (*ASQ2, "s_code"), 0, r"'s_code' is 0"),
    ("ASQ s_code 4096", (*ASQ2, "s_code"), 4096, r"'s_code' is 4096"),
    ("ASQ qmax 10^6", (*ASQ2, "qmax"), 10**6, r"'qmax' is 1000000"),
    ("ASQ FY -3", (*ASQ2, "FY"), -3, r"FY"),
    ("ASQ S2 -1", (*ASQ2, "S2"), -1, r"'S2' is -1"),
    ("ASQ W2 outside 12 bits", (*ASQ2, "W2", 0), 1 << 20, r"'W2\[0\]'"),
    ("beta_min > beta_max", (*ASQ2, "beta_min"), 20000, r"'beta_min' is 20000"),
    ("beta_max < beta_min", (*ASQ2, "beta_max"), 10, r"'beta_max' is 10"),
    ("beta_min 0", (*ASQ2, "beta_min"), 0, r"'beta_min' is 0"),
    ("requant B 2^70", (*CONV2, "requant", "B", 0), 2**70, r"'B\[0\]'"),
    ("requant M 1.5", (*CONV2, "requant", "M", 0), 1.5, r"'M' must hold integers"),
    ("requant M 2^20", (*CONV2, "requant", "M", 0), 1 << 20, r"'M\[0\]'"),
    ("requant M_width 40", (*CONV2, "requant", "M_width"), 40, r"'M_width' is 40"),
    ("requant S -1", (*CONV2, "requant", "S"), -1, r"'S' is -1"),
    ("requant lo > hi", (*CONV2, "requant", "lo"), 70000, r"'lo' is 70000"),
    ("requant hi not the next codes' max", (*CONV3, "requant", "hi"), 127, r"lo\.\.hi 0\.\.127"),
    ("acc_width 200", (*CONV2, "acc_width"), 200, r"'acc_width' is 200"),
    # digits-b3 is exported at F = 3: conv2's largest product is (7 << 1) << 3 = 112 (code 7, sqrt2
    # exponent 2, three fractional bits), and 144 * 112 = 16128 needs 15 bits signed.
    ("acc_width 1 short", (*CONV2, "acc_width"), 14, r"'acc_width' is 14"),
    ("product_range widened", (*CONV2, "product_range"), [-113, 112], r"'product_range'"),
    ("fan_in 1", (*CONV2, "fan_in"), 1, r"'fan_in' is 1"),
    ("input lut code outside int8", ("input", "lut", 0), -200, r"'lut\[0\]' is -200"),
    ("input lut codes not distinct", ("input", "lut", 1), -64, r"'lut' maps two pixel values"),
    ("input pixel_max 0", ("input", "pixel_max"), 0, r"pixel_max|lut"),
    ("weight scale NaN", (*CONV2, "weight", "scale", 0), float("nan"), r"'scale'"),
    ("act_in step 0", (*CONV2, "act_in", "step"), 0.0, r"'step'"),
    ("model resnet18", ("model",), "resnet18", r"'model' is 'resnet18'"),
    ("scheme foo", ("scheme",), "foo", r"'scheme' is 'foo'"),
    ("scheme of other weights", ("scheme",), "asq", r"'kind' is 'post', expected 'int'"),
    ("bits 4 on 3-bit layers", ("bits",), 4, r"'bits' is 3, expected 4"),
    ("layer bits 4 in a 3-bit bundle", (*CONV2, "act_in", "bits"), 4, r"bits"),
    ("files entry not a digest", ("files", "conv1.weights.mem"), "abc", r"SHA-256"),
]


#: What the graph (format-2) reader says where its words differ from the chain reader's: it checks a
#: recorded width or range against the one it derives from the graph, and names the node and field.
#: Its network name is free (a user's own network is named by its user): that edit is refused by the
#: manifest's checksum alone. Its BITS and scheme must be its middle layers', as in format 1.
GRAPH_NAMES = {
    "ASQ qmax 10^6": r"qmax 1000000 disagrees with bits 3",
    "beta_max < beta_min": r"node 'conv2'\.requant: t_width 44 recorded, 36 proved",
    "requant B 2^70": r"node 'conv2'\.requant: t needs 82 bits",
    "requant M 2^20": r"node 'conv2'\.requant: M outside the 16-bit multiplier range",
    "requant M_width 40": r"M_width 40 recorded, 16 proved",
    "requant lo > hi": r"lo 70000 > hi 65535",
    "requant hi not the next codes' max": r"node 'conv3'\.requant: out_width 8 recorded, 7 proved",
    "acc_width 200": r"node 'conv2': acc_width 200 recorded, 15 derived",
    "acc_width 1 short": r"node 'conv2': acc_width 14 recorded, 15 derived",
    "product_range widened": r"product_range \[-113, 112\] recorded, \[-112, 112\] derived",
    "fan_in 1": r"fan_in 1 recorded, 144 derived",
    "model resnet18": r"changed since export",
    "scheme of other weights": r"node 'conv2'\.act_in: field 'quant' is 'asq', expected 'lsq'|"
                               r"node 'conv2'\.weight: field 'kind' is 'post', expected 'int'",
    "bits 4 on 3-bit layers": r"node 'conv2'\.act_in: field 'bits' is 3, expected 4",
}


@pytest.mark.parametrize("case, keys, value, names", MEANING_CASES, ids=[c[0] for c in MEANING_CASES])
def test_a_value_of_impossible_meaning_is_refused(bundle_copy, case, keys, value, names):
    edit_manifest(bundle_copy, lambda man: set_at(man, keys, value))
    graph = "graph" in json.loads((bundle_copy / MANIFEST).read_text())
    with pytest.raises(UserError, match=GRAPH_NAMES.get(case, names) if graph else names) as err:
        read_bundle(bundle_copy)
    assert "\n" not in str(err.value) and MANIFEST in str(err.value)


@pytest.mark.parametrize("argv", [["eval", "--golden"], ["verilog", "--no-lint", "--model"]],
                         ids=["eval --golden", "verilog"])
@pytest.mark.parametrize("keys, value, names", [c[1:] for c in MEANING_CASES],
                         ids=[c[0] for c in MEANING_CASES])
def test_the_commands_refuse_it_on_one_line_with_status_2(bundle_copy, tmp_path, capsys, argv, keys,
                                                           value, names):
    edit_manifest(bundle_copy, lambda man: set_at(man, keys, value))
    extra = ["--out", str(tmp_path / "v")] if argv[0] == "verilog" else []
    assert main([*argv, str(bundle_copy), *extra]) == 2
    assert MANIFEST in one_line_error(capsys)
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("mem, names", [
    ("/etc/hostname", "not a plain file name"),
    ("../../../etc/passwd", "not a plain file name"),
    ("sub/conv1.weights.mem", "not a plain file name"),
    ("..", "not a plain file name"),
    ("", "not a plain file name"),
    ("conv2.weights.mem", "used twice"),
    ("vectors.npz", "used twice"),
    (MANIFEST, "not a plain file name"),
])
def test_mem_paths_outside_the_bundle_are_refused(bundle_copy, mem, names):
    edit_manifest(bundle_copy, lambda man: set_at(man, (*CONV3[:1], 0, "weight", "mem"), mem))
    with pytest.raises(UserError, match=names):
        read_bundle(bundle_copy)


def test_a_link_leading_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.mem"
    shutil.copy(bundle_copy / "conv1.weights.mem", outside)
    (bundle_copy / "conv1.weights.mem").unlink()
    (bundle_copy / "conv1.weights.mem").symlink_to(outside)
    with pytest.raises(UserError, match="resolves outside the bundle folder"):
        read_bundle(bundle_copy)


def test_a_mem_path_that_is_a_folder_is_refused(bundle_copy):
    (bundle_copy / "conv1.weights.mem").unlink()
    (bundle_copy / "conv1.weights.mem").mkdir()
    with pytest.raises(UserError, match="is a folder, not a file"):
        read_bundle(bundle_copy)


def test_a_file_changed_since_export_is_refused(bundle_copy):
    mem = bundle_copy / "conv2.weights.mem"
    lines = mem.read_text().splitlines()
    lines[0] = "7" if lines[0] != "7" else "6"  # still a valid 3-bit word: only the checksum tells
    mem.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"conv2\.weights\.mem changed since export.*re-export"):
        read_bundle(bundle_copy)


@pytest.mark.parametrize("field", ["files", "sha256"])
def test_a_manifest_without_checksums_is_refused(bundle_copy, field):
    edit_manifest(bundle_copy, lambda man: man.pop(field))
    with pytest.raises(UserError, match=f"'{field}'.*missing"):
        read_bundle(bundle_copy)


def test_a_constant_changed_to_another_valid_value_is_refused(bundle_copy):
    """In range, so only the manifest's own checksum can tell: refused rather than computed with."""
    edit_manifest(bundle_copy, lambda man: set_at(man, (*CONV2, "requant", "M", 0),
                                                  get_at(man, (*CONV2, "requant", "M", 0)) + 1))
    with pytest.raises(UserError, match=r"manifest\.json changed since export.*re-export"):
        read_bundle(bundle_copy)


def test_a_manifest_laid_out_differently_is_the_same_bundle(bundle_copy, shipped_bundle, format1_bundle):
    man = json.loads((bundle_copy / MANIFEST).read_text())
    (bundle_copy / MANIFEST).write_text(json.dumps(man, indent=4, sort_keys=True))
    fmt = man["format_version"]
    assert read_bundle(bundle_copy).manifest == read_bundle(original(fmt, shipped_bundle, format1_bundle)).manifest


def _rewrite_vectors(path, change) -> None:
    vecs = read_npz(path / "vectors.npz")
    change(vecs)
    (path / "vectors.npz").write_bytes(npz_bytes(vecs))
    rehash(path, "vectors.npz")  # so the content check, not the checksum, has to find it


@pytest.mark.parametrize("change, names", [
    (lambda v: v.pop("pred"), "keys"),
    (lambda v: v.__setitem__("extra", np.zeros(3, np.uint8)), "keys"),
    (lambda v: v.update({k: a[:10] for k, a in v.items()}), r"one entry per test image|of shape \[360,"),
    (lambda v: v.__setitem__("logits", v["logits"][:, :5]), "'logits'"),
    (lambda v: v.__setitem__("conv2.in", v["conv2.in"].astype(np.float32)), "'conv2.in' is float32"),
    (lambda v: v.__setitem__("pixels", v["pixels"] + 100), "'pixels' outside"),
], ids=["key dropped", "key added", "10 images", "wrong shape", "float codes", "pixels out of range"])
def test_vectors_of_the_wrong_keys_shapes_or_counts_are_refused(bundle_copy, change, names):
    _rewrite_vectors(bundle_copy, change)
    with pytest.raises(UserError, match=names):
        read_bundle(bundle_copy)


def test_eval_golden_refuses_wrong_vectors_instead_of_matching_them(bundle_copy, capsys):
    _rewrite_vectors(bundle_copy, lambda v: v.pop("conv3.in"))
    assert main(["eval", "--golden", str(bundle_copy), "--json"]) == 2
    assert "vectors.npz" in one_line_error(capsys)


def test_scheme_and_network_names_are_shared_with_training():
    from quant.export.networks import NETWORKS
    from quant.schemes import SCHEMES

    assert sorted(NETWORKS) == sorted(formats.NETWORK_NAMES)
    assert SCHEMES is formats.SCHEMES
    assert all(formats.BUNDLE_SCHEMES[name] == pair for name, pair in SCHEMES.items())


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def nan_checkpoint(tmp_path, shipped_checkpoint):
    import torch

    payload = torch.load(shipped_checkpoint(BUNDLE), map_location="cpu", weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if k.endswith("weight") and v.is_floating_point())
    payload["state_dict"][key].view(-1)[0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(payload, path)
    return path, key


def test_a_checkpoint_with_nan_weights_is_refused(nan_checkpoint):
    from quant.checkpoint import load_checkpoint

    path, key = nan_checkpoint
    with pytest.raises(UserError, match=rf"{key} holds NaN or infinite values"):
        load_checkpoint(path)


def test_eval_of_a_nan_checkpoint_is_one_line(nan_checkpoint, capsys):
    assert main(["eval", str(nan_checkpoint[0])]) == 2
    assert "NaN" in one_line_error(capsys)


def test_a_checkpoint_of_other_bits_is_refused_against_the_bundle(shipped_bundle, shipped_checkpoint):
    from quant.export.fidelity import golden_report

    with pytest.raises(UserError, match=r"not the bundle's model \(bits 4 vs 3\)"):
        golden_report(shipped_bundle(3), shipped_checkpoint(4))
    with pytest.raises(UserError, match=r"model 'digits' vs 'digits-vary'"):
        golden_report(shipped_bundle("digits-vary-b3"), shipped_checkpoint(3))


@pytest.mark.parametrize("key, value", [
    ("model", ["digits"]), ("scheme", {}), ("scheme", "foo"), ("model", "resnet18"), ("bits", 9),
    ("bits", "3"), ("bits", 1.5), ("num_classes", 0), ("num_classes", -1), ("num_classes", 2**40),
    ("num_classes", "10"), ("state_dict", None),
])
def test_a_checkpoint_with_impossible_metadata_is_refused(tmp_path, shipped_checkpoint, capsys, key, value):
    import torch

    payload = torch.load(shipped_checkpoint(BUNDLE), map_location="cpu", weights_only=True)
    payload[key] = value
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    assert main(["eval", str(path)]) == 2
    line = one_line_error(capsys)
    assert str(path) in line


@pytest.mark.parametrize("key, value", [("bits", 2), ("bits", 4), ("scheme", "asq"), ("model", "resnet20")])
def test_a_checkpoint_field_edited_since_training_is_refused(tmp_path, shipped_checkpoint, key, value):
    # a 3-bit asq+post digits run relabelled: its weights would load into another model and compute
    # other logits without a word
    import torch

    from quant.checkpoint import load_checkpoint

    payload = torch.load(shipped_checkpoint(3), map_location="cpu", weights_only=True)
    payload[key] = value
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    with pytest.raises(UserError, match=rf"field '{key}' is '?{value}'? but the run's config trained"):
        load_checkpoint(path)
