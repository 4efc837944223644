"""examples/byon_graph.py: a user's own residual nn.Module (not a shipped model) through quantize_model,
training, a checkpoint, the graph exporter, ``asqhw eval --golden``, the engine's Verilog and Verilator,
bit-exact; and an unsupported op in it refused at export in one line naming the op and the fx node."""

import json
from pathlib import Path

import pytest
import torch

from asqhw.errors import UserError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "byon_graph.py"


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("byon_graph")


def test_an_unsupported_op_in_the_users_module_is_refused_in_one_line(example, tmp_path, one_thread):
    from quant.data import digits_split

    torch.manual_seed(0)
    message = example.show_refusal(digits_split()[0][:64], "asq+post", 3, tmp_path / "bundle")
    assert message.startswith("fx node 'act' (call_module act): op SiLU is not supported by the graph exporter")
    assert "\n" not in message
    assert not (tmp_path / "bundle").exists()


def test_a_users_network_gets_a_name_of_its_own_and_a_shipped_data_set():
    from quant.export.networks import DIGITS, user_network

    net = user_network("my-resnet", "digits")
    assert (net.name, net.model, net.input_shape, net.pixel_max) == ("my-resnet", "my-resnet", [1, 8, 8], 16)
    assert net.split is DIGITS.split
    assert user_network("mine", "digits32").input_shape == [3, 32, 32]  # the digits at 32x32x3
    with pytest.raises(UserError, match="'digits' is a shipped network's name"):
        user_network("digits")
    with pytest.raises(UserError, match="data 'cifar10': a user's network is trained on one of digits, "):
        user_network("mine", "cifar10")


def _graph(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_the_example_exports_its_graph_and_writes_the_engine(example, tmp_path, one_thread, capsys):
    assert example.main(["--out", str(tmp_path), "--quick", "--no-sim"]) == 0
    out = capsys.readouterr().out
    manifest = _graph(tmp_path / "bundle")
    assert (manifest["format_version"], manifest["model"], manifest["scheme"], manifest["bits"]) == (
        2, "my-resnet", "asq+post", 3)
    nodes = {n["name"]: n for n in manifest["graph"]["nodes"]}
    adds = [n for n in nodes.values() if n["op"] == "add"]
    # both shortcut kinds: a 1x1 stride-2 conv read as the skip branch, and an identity (a stored y)
    skips = [nodes[a["inputs"][1]] for a in adds]
    assert sorted((s["op"], s.get("kernel"), s.get("stride")) for s in skips) == [("conv", 1, 2), ("conv", 3, 1)]
    assert {"maxpool", "gap", "flatten", "fc"} <= {n["op"] for n in nodes.values()}
    assert manifest["accuracy"]["n_test"] == 360 and manifest["accuracy"]["golden"] > 0.5  # far above chance
    assert "golden top-1" in out and "every bound holds" in out  # asqhw eval --golden on the user's bundle
    from quant.export.fidelity import golden_report

    report = golden_report(tmp_path / "bundle")  # no network registered as 'my-resnet': the bundle's test split
    assert report["vectors_match"] and report["n_test"] == 360
    assert report["golden_top1"] == pytest.approx(100 * manifest["accuracy"]["golden"])
    assert "module graph_engine(" in (tmp_path / "verilog" / "graph_engine.v").read_text()
    assert "cycles per image" in out
    assert "refused: fx node 'act' (call_module act): op SiLU is not supported" in out
    assert (tmp_path / "my-resnet.pt").is_file()

    # The command line exports the same checkpoint given the class: the Python route's bundle, byte for byte.
    from asqhw.cli import main as asqhw

    assert asqhw(["export", str(tmp_path / "my-resnet.pt"), str(tmp_path / "cli"), "--quiet",
                  "--network", f"{EXAMPLE}:MyResNet"]) == 0
    written = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == written
    for name in written:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "bundle" / name).read_bytes(), name


@pytest.mark.sim
@pytest.mark.slow
def test_the_example_runs_bit_exact_on_verilator(example, tmp_path, one_thread, capsys):
    assert example.main(["--out", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    assert "graph_engine of my-resnet BITS=3 PE=4, 2 images of" in out
    assert "every output value equals golden.graph.run_graph" in out
    assert "done in" in out


DOC = EXAMPLE.parents[1] / "docs" / "byon.md"
RUN = EXAMPLE.parents[1] / "docs" / "data" / "byon-graph-run.txt"
#: Lines in the page's code blocks that are not output of the recorded run: commands, code, the
#: network's sketch, the command-line refusal and the chain route.
NOT_RECORDED = ("python ", "$ ", "asqhw: error:", "from ", "bundle = ", "...", "pixels/16", " ")


def test_the_pages_figures_are_the_recorded_runs():
    """Every output line docs/byon.md quotes, and the figures of its table, are in the recorded run
    (docs/data/byon-graph-run.txt), not typed."""
    record = RUN.read_text().splitlines()
    blocks = DOC.read_text().split("```")[1::2]
    quoted = [line for block in blocks for line in block.splitlines()[1:]
              if line and not line.startswith(NOT_RECORDED)]
    assert len(quoted) >= 15
    missing = [line for line in quoted if line not in record]
    assert not missing, f"quoted in docs/byon.md but not in {RUN.name}: {missing}"
    text = RUN.read_text()
    for figure in ("float: test top-1 99.17 %", "3-bit: test top-1 98.33 %", "golden 98.89 %, 2 of 360",
                   "cycles per image: 107748", "109913 cycles per image", "MAC bound 90448", "56896 bits",
                   "(160250 without reuse)", "61056 bits", "48.2 s for 360 images (build 47 s)", "done in 142 s",
                   "F = 2", "360 images of build/byon-graph/bundle", "12 checks, every bound holds"):
        assert figure in text, figure


# ----------------------------------------------------------------------------- asqhw export --network


@pytest.fixture
def untrained_checkpoint(example, tmp_path):
    """A checkpoint of an untrained quantized ``MyResNet`` (what the refusals need: they stop before export)."""
    from quant.checkpoint import save_checkpoint

    def write(config):
        path = tmp_path / "my-resnet.pt"
        model = example.quantized(example.MyResNet(), "asq+post", 3)
        save_checkpoint(path, model, {"model": "my-resnet", "scheme": "asq+post", "bits": 3, "epoch": 0,
                                      "config": config})
        return path

    return write


def _export(checkpoint, out, network):
    from asqhw.cli import main as asqhw

    return asqhw(["export", str(checkpoint), str(out), "--quiet", "--network", network])


@pytest.mark.parametrize("spec, message", [
    ("MyResNet", "give FILE.py:NAME or MODULE:NAME"),
    ("{missing}:MyResNet", "does not exist"),
    ("{example}:NoSuchClass", "defines no class or function 'NoSuchClass'"),
    ("{bad}:Needs", "Needs() failed (TypeError: "),
    ("{bad}:NotAModule", "NotAModule() returned a int, not a torch.nn.Module"),
    ("{broken}:Net", "importing "),
    ("no_such_module_xyz:Net", "failed (ModuleNotFoundError: No module named 'no_such_module_xyz')"),
])
def test_a_bad_network_spec_is_refused_in_one_line_and_writes_nothing(untrained_checkpoint, tmp_path, capsys,
                                                                       spec, message):
    checkpoint = untrained_checkpoint({"data": "digits"})
    (tmp_path / "bad.py").write_text("class Needs:\n    def __init__(self, width):\n        pass\n\n"
                                     "def NotAModule():\n    return 3\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no torch here')\n")
    spec = spec.format(missing=tmp_path / "missing.py", example=EXAMPLE, bad=tmp_path / "bad.py",
                       broken=tmp_path / "broken.py")
    assert _export(checkpoint, tmp_path / "out", spec) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and f"--network {spec!r}" in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_users_checkpoint_without_its_data_set_is_refused(untrained_checkpoint, tmp_path, capsys):
    checkpoint = untrained_checkpoint({})
    assert _export(checkpoint, tmp_path / "out", f"{EXAMPLE}:MyResNet") != 0
    assert "the checkpoint records no data set (meta['config']['data'] is None)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_class_that_does_not_match_the_checkpoint_is_refused(untrained_checkpoint, tmp_path, capsys):
    checkpoint = untrained_checkpoint({"data": "digits"})
    (tmp_path / "other.py").write_text(f"import importlib.util\nspec = importlib.util.spec_from_file_location("
                                       f"'ex', {str(EXAMPLE)!r})\nex = importlib.util.module_from_spec(spec)\n"
                                       "spec.loader.exec_module(ex)\n\ndef Wider():\n    return ex.MyResNet(width=8)\n")
    assert _export(checkpoint, tmp_path / "out", f"{tmp_path / 'other.py'}:Wider") != 0
    assert "does not match model 'my-resnet': " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_network_the_users_checkpoint_is_refused_with_the_way_out(untrained_checkpoint, tmp_path, capsys):
    from asqhw.cli import main as asqhw

    assert asqhw(["export", str(untrained_checkpoint({"data": "digits"})), str(tmp_path / "out")]) != 0
    assert ("field 'model' is 'my-resnet'; export supports the models digits, resnet20 only (for your own "
            "network pass its class: --network FILE.py:CLASS)") in capsys.readouterr().err
