"""examples/byon_digits.py runs (a user's own nn.Module to a bundle, Verilog and simulation), and a
model outside the supported chain is refused at export with a one-line error."""

import json

import pytest
from torch import nn

from asqhw.errors import UserError


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("byon_digits")


def test_the_example_reaches_the_verilog(example, tmp_path, one_thread, capsys):
    assert example.main(["--out", str(tmp_path), "--float-epochs", "3", "--qat-epochs", "1", "--no-sim"]) == 0
    out = capsys.readouterr().out
    assert "golden" in out and "done in" in out
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert (manifest["model"], manifest["scheme"], manifest["bits"]) == ("digits", "asq+post", 3)
    assert manifest["accuracy"]["golden"] > 0.5  # trained, if briefly: far above chance (0.1)
    assert "module asq_accel(" in (tmp_path / "verilog" / "asq_accel.v").read_text()


def test_a_model_off_the_supported_chain_is_refused_at_export(example, tmp_path, one_thread):
    from quant.data import digits_split
    from quant.export.build import export_model
    from quant.quantize import calibrate, quantize_model

    model = example.MyDigitsNet()
    model.conv3, model.bn3 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
    model.fc = nn.Linear(64, 10)
    quantize_model(model, "asq+post", 3)
    calibrate(model, digits_split()[0][:64])
    meta = {"model": "digits", "scheme": "asq+post", "bits": 3, "epoch": 0, "config": {"data": "digits"}}
    with pytest.raises(UserError, match=r"conv3\).weight: shape \[16, 16, 3, 3\] disagrees") as err:
        export_model(model, meta, tmp_path / "b", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()


@pytest.mark.sim
@pytest.mark.slow
def test_the_example_runs_through_the_simulator(example, tmp_path, one_thread, capsys):
    assert example.main(["--out", str(tmp_path), "--float-epochs", "3", "--qat-epochs", "1", "--images", "1"]) == 0
    assert "every logit, class and layer code equals the golden model" in capsys.readouterr().out
