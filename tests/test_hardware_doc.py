"""docs/hardware.md is what studies.hardware_doc writes from the template, the code and the recorded report."""

import copy

import pytest

from asqhw.errors import UserError
from studies import hardware_doc


@pytest.fixture(scope="module")
def rows():
    return hardware_doc.cycle_rows()


def test_the_page_is_what_the_generator_writes(rows):
    page = hardware_doc.render(hardware_doc.read_record(), rows)
    assert hardware_doc.PAGE.read_text() == page, "run: python -m studies.hardware_doc"
    assert "{{" not in page and "<!--" not in page.split("\n", 1)[0]


def test_default_run_cycles_follow_the_loop_nest_by_hand(rows):
    # H_out * W_out * ceil(C_out / PE) * k^2 * C_in / lanes at PE 4 x SIMD 4 (the wide engine has
    # one lane and pads fc's 10 outputs to 12): conv1 8*8*4*9*1, conv2 4*4*4*9*4, conv3 2*2*8*9*4,
    # fc 1*1*3*1*128.
    default = rows[0]
    assert (default["pe"], default["simd"]) == (4, 4)
    assert default["run"] == {"conv1": 2304, "conv2": 2304, "conv3": 1152, "fc": 384}
    assert hardware_doc.overhead_cycles(default) == default["cycles"] - 6144


def _record(**report):
    base = {
        "design": {"bundle": "models/x"}, "cycles_per_inference": 1000, "clock_mhz": 10.0,
        "resources": {"lut4": {"used": 3000, "available": 5000}, "flip_flops": {"used": 900, "available": 5000},
                      "block_ram": {"used": 20, "available": 30}, "dsp": {"used": 7, "available": 8}},
    }
    base.update(report)
    return {"command": "asqhw synth --board icebreaker --bits 3 --seeds 2",
            "tools": {"yosys": "9.9", "nextpnr-ice40": "8.8"}, "report": base}


def _rows(cycles=1000):
    return [{"pe": 4, "simd": 4, "cycles": cycles, "run": {"a": 600, "b": 300}}]


def test_a_fitting_design_gives_its_throughput_and_margin():
    record = _record(fits=True, fmax_mhz={"seeds": {"1": 21.0, "2": 19.0}, "median": 20.0, "min": 19.0},
                     untimed_paths={"count": 0},
                     inferences_per_s={"at_board_clock": 10000.0, "at_fmax_median": 20000.0})
    record["report"]["resources"]["logic_cells"] = {"used": 4000, "available": 5000}
    fig = hardware_doc.figures(record, _rows())
    assert "| logic cells (`ICESTORM_LC`) | 4000 | 5000 |" in fig["resources_table"]
    assert "| Fmax (median, min over 2 seeds) | 20.0, 19.0 MHz | board clock 10 MHz |" in fig["resources_table"]
    verdict = " ".join(fig["verdict"].split())
    assert verdict.startswith("1000 cycles per image: 10000 inferences/s at 10 MHz, 20000 at the median")
    assert "80.0 % of the logic cells" in verdict
    assert fig["overhead_cycles"] == "100" and fig["yosys"] == "9.9" and fig["nextpnr"] == "8.8"
    assert fig["cycle_table"].splitlines()[2] == "| 4 x 4 (default) | 1000 | 600 | 300 |"


def test_a_design_that_does_not_fit_says_so_with_nextpnrs_figures():
    record = _record(fits=False, problems=["ICESTORM_LC: 5293 used > 5280 available (nextpnr)"])
    fig = hardware_doc.figures(record, _rows())
    assert "| logic cells (`ICESTORM_LC`) | 5293 | 5280 |" in fig["resources_table"]
    assert "| Fmax | not placed |" in fig["resources_table"]
    verdict = " ".join(fig["verdict"].split())
    assert verdict.startswith("**It does not fit:** it needs 5293 logic cells of the 5280 (100.2 %")
    assert "1000 cycles per image would give 10000 inferences/s" in verdict


def test_a_report_of_another_design_is_refused():
    with pytest.raises(UserError, match="1000 cycles per image, the generator now gives 999"):
        hardware_doc.figures(_record(fits=False), _rows(cycles=999))


def test_a_template_placeholder_without_a_figure_is_an_error(tmp_path):
    template = tmp_path / "t.md"
    template.write_text("<!-- note -->\n{{verdict}} {{no_such_figure}}\n")
    record = copy.deepcopy(_record(fits=False, problems=[]))
    with pytest.raises(KeyError, match="no_such_figure"):
        hardware_doc.render(record, _rows(), template=template)


def test_check_mode_reports_an_up_to_date_page(capsys):
    assert hardware_doc.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
