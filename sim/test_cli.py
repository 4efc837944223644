"""``asqhw sim``: bad input is refused with a fix; a short real run prints what the issue asks."""

import json

import pytest

from asqhw.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--bits", "7"], "no bundle for BITS=7"),
    (["--images", "0"], "--images 0: simulate at least 1 image"),
    (["--stall", "1.5"], "stall probability 1.5 must be in [0, 1)"),
    (["--images", "361"], "image index 360 outside 0..359"),
])
def test_sim_refuses_bad_arguments(argv, message, capsys):
    assert main(["sim", "--simulator", "icarus", *argv]) == 2
    assert message in capsys.readouterr().err


def test_sim_refuses_a_folder_that_is_no_bundle(tmp_path, capsys):
    assert main(["sim", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no manifest.json" in err


def test_sim_refuses_bits_other_than_the_bundles(capsys, shipped_bundle):
    assert main(["sim", "--simulator", "icarus", "--bits", "4", "--model", str(shipped_bundle(3))]) == 2
    assert "BITS=4" in capsys.readouterr().err


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_sim_short_run_prints_accuracy_cycles_speed_and_writes_waves(simulator, tmp_path, capsys):
    out = tmp_path / "summary.json"
    rc = main(["sim", "--simulator", simulator, "--bits", "3", "--images", "2", "--waves",
               "--json", str(out)])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, printed
    assert f"asqhw sim: building asq_accel for {simulator}" in captured.err  # said before the silent build
    summary = json.loads(out.read_text())
    assert summary["images"] == 2 and summary["passed"]
    assert f"accuracy: RTL {summary['rtl_accuracy']:.4f}, golden {summary['golden_accuracy']:.4f}" in printed
    assert "cycles per image:" in printed and "simulation speed:" in printed
    waves = summary["waves"]
    assert waves and waves.endswith({"icarus": ".fst", "verilator": ".vcd"}[simulator]), waves
    with open(waves, "rb") as f:
        head = f.read(4096)
    assert len(head) == 4096  # a real waveform, not an empty file
    if simulator == "verilator":
        assert b"$var" in head and b"o__valid" in head


def test_format_summary_prints_the_mismatch_report():
    from sim.cli import format_summary

    summary = {"simulator": "icarus", "design": {"bits": 3}, "images": 1, "bundle": "b", "passed": False,
               "report": "image 0 layer conv3.in index 5: expected 2 got 3", "error": "1 of 1 failed",
               "rtl_accuracy": None, "cycles_per_image": None, "cycles_per_s": 1.0, "images_per_s": 1.0,
               "wall_s": 1.0}
    text = format_summary(summary)
    assert "MISMATCH" in text and "image 0 layer conv3.in index 5: expected 2 got 3" in text


def test_sim_refuses_a_bundle_whose_vectors_disagree_with_golden(tmp_path, capsys, shipped_bundle):
    from golden.bundle import read_bundle, write_bundle

    stale = read_bundle(shipped_bundle(3))
    stale.vectors["logits"] = stale.vectors["logits"].copy()
    stale.vectors["logits"][7, 2] += 1  # a stale vector file: image 7 no longer matches the constants
    bundle = write_bundle(stale, tmp_path / "b3")  # checksums of the stale file: only golden can tell
    assert main(["sim", "--simulator", "icarus", "--model", str(bundle), "--images", "1"]) == 2
    assert "stored golden logits of image 7 differ" in capsys.readouterr().err
