"""`asqhw verilog`: outputs, the lint check, and every refusal before anything is written."""

import json

import pytest

from asqhw.cli import main
from golden.bundle import write_bundle
from hw.cli import LINT_WAIVERS, STYLE_WAIVERS, lint
from hw.eda.generate import build_top, unit_verilog
from hw.testing import random_bundle


@pytest.fixture(scope="module")
def bundle_b3(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "digits-b3"
    write_bundle(random_bundle(3, "post", scheme_asq=True, seed=5), path)
    return path


def test_verilog_command_writes_linted_verilog_and_manifest(bundle_b3, tmp_path, capsys):
    out = tmp_path / "b3"
    assert main(["verilog", "--bits", "3", "--model", str(bundle_b3), "--out", str(out)]) == 0
    text = (out / "asq_accel.v").read_text()
    assert "module asq_accel(" in text
    for port in ("i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload", "cycles"):
        assert port in text.split("module asq_accel(", 1)[1].split(");", 1)[0]
    man = json.loads((out / "manifest.json").read_text())
    gen = man["generator"]
    assert (gen["bits"], gen["mul"], gen["pe"], gen["simd"], gen["top"]) == (3, "post", 4, 4, "asq_accel")
    from golden.model import load_bundle

    top = build_top(load_bundle(bundle_b3), pe=4, simd=4)
    assert gen["cycles_per_inference"] == top.cycles_per_inference()
    assert man["layers"] == json.loads((bundle_b3 / "manifest.json").read_text())["layers"]
    assert "cycles per inference" in capsys.readouterr().out


def test_lint_catches_a_real_warning(tmp_path):
    # The waivers must not hide other warnings: a non-blocking assignment in combinational logic.
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input [3:0] a, output reg [3:0] y);\n  always @(*) y <= a;\nendmodule\n")
    from asqhw.errors import UserError

    with pytest.raises(UserError, match="verilator --lint-only failed"):
        lint(bad)
    assert set(LINT_WAIVERS) == {"WIDTHEXPAND", "WIDTHTRUNC"}
    with pytest.raises(UserError, match="verilator --lint-only --language 1800-2017 -Wall failed"):
        lint(bad, systemverilog=True)


def test_systemverilog_lint_parses_as_systemverilog(tmp_path):
    # `logic` is an identifier in Verilog 2005 and a keyword in SystemVerilog.
    v2005 = tmp_path / "v2005.v"
    v2005.write_text("module v2005(input logic, output y);\n  assign y = logic;\nendmodule\n")
    from asqhw.errors import UserError

    with pytest.raises(UserError, match="(?s)1800-2017.*syntax error"):
        lint(v2005, systemverilog=True)
    assert set(STYLE_WAIVERS) == {"UNUSEDSIGNAL", "PROCASSINIT", "DECLFILENAME"}


@pytest.mark.parametrize("bits", [3, 4])
def test_shipped_accelerators_lint_clean_as_systemverilog(bits, shipped_bundle, tmp_path):
    """The generated ``asq_accel.v`` of each shipped bundle: no warning under ``-Wall`` in IEEE 1800-2017
    mode beyond the waived ones, as a SystemVerilog testbench would read it."""
    from hw.eda.generate import generate_verilog

    verilog = generate_verilog(shipped_bundle(bits), out_dir=tmp_path)["paths"]["verilog"]
    lint(verilog, systemverilog=True)


@pytest.mark.parametrize("argv,message", [
    (["--bits", "9"], "BITS=9 is outside 2-8"),
    (["--bits", "1"], "BITS=1 is outside 2-8"),
    (["--bits", "3", "--mul", "fp"], "MUL='fp' is unknown"),
    (["--bits", "6", "--mul", "post"], "MUL=post is offered up to 5 bits"),
    (["--bits", "5", "--mul", "pot"], "MUL=pot is offered up to 4 bits"),
    (["--bits", "3", "--pe", "3"], "PE=3 must be a power of two"),
    (["--bits", "3", "--simd", "0"], "SIMD=0 must be a power of two"),
    (["--bits", "4"], "BITS=4 but bundle"),
    (["--bits", "3", "--pe", "64"], "PE=64 does not divide the 16 output channels of layer conv2"),
    (["--bits", "3", "--simd", "32"], "SIMD=32 does not divide the 16 input channels of layer conv2"),
    (["--bits", "3", "--mul", "int"], "MUL=int but the 3-bit layers"),
])
def test_refusals_write_nothing(bundle_b3, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["verilog", "--model", str(bundle_b3), "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_default_bundle_is_a_user_error(tmp_path, capsys, monkeypatch):
    import golden.bundle

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(golden.bundle, "SHIPPED_MODELS", tmp_path / "models")
    assert main(["verilog", "--bits", "3"]) == 2
    err = capsys.readouterr().err
    assert "models/digits-b3" in err and "MODEL=" in err
    assert not (tmp_path / "build").exists()


def test_default_bundle_gives_build_verilog_b3(tmp_path, monkeypatch, capsys):
    """What `make verilog BITS=3` runs, from another working directory: the shipped bundle."""
    monkeypatch.chdir(tmp_path)
    assert main(["verilog", "--bits", "3"]) == 0
    out = tmp_path / "build" / "verilog" / "b3"
    assert sorted(p.name for p in out.iterdir()) == ["asq_accel.v", "manifest.json"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["bits"] == 3 and man["generator"]["mul"] == man["layers"][1]["weight"]["kind"]
    assert man["generator"]["cycles_per_inference"] < 10_000


@pytest.mark.parametrize("name,params", [
    ("mul_lane", {"kind": "post", "w_bits": 3, "act_bits": 3, "pe": 4}),
    ("mac_array", {"kind": "post", "w_bits": 4, "act_bits": 4, "pe": 2, "simd": 2, "acc_width": 22}),
])
def test_unit_verilog_is_standalone_and_lints(tmp_path, name, params):
    path = unit_verilog(name, tmp_path, **params)
    assert f"module {name}(" in path.read_text()
    lint(path)


@pytest.mark.parametrize("name", ["requant", "asq_unit", "wide_array"])
def test_unit_verilog_from_a_bundle_is_the_accelerators_unit(bundle_b3, tmp_path, name):
    path = unit_verilog(name, tmp_path, bundle=bundle_b3)
    text = path.read_text()
    assert f"module {name}(" in text
    lint(path)
