"""The generated ``asq_accel.v`` under a plain Verilog testbench (no cocotb) on Icarus.

``-g2012`` (IEEE 1800 semantics, where declaration initializers make no time-0 event) is the case
that once hung the design with X on ``i__ready``; ``-g2005`` is the older rule set. The testbench
also offers input beats during reset and checks that none is taken.
"""

import pytest

from golden.bundle import SHIPPED_MODELS
from golden.model import load_bundle
from hw.eda.generate import generate_verilog
from sim.plain_tb import GENERATIONS, run_plain_testbench

N_IMAGES = 3

pytestmark = pytest.mark.sim  # every test runs Icarus


@pytest.fixture(scope="module")
def design_b3(tmp_path_factory):
    bundle = load_bundle(SHIPPED_MODELS / "digits-b3")
    out = tmp_path_factory.mktemp("plain") / "verilog"
    return bundle, generate_verilog(bundle, out_dir=out)["paths"]["verilog"]


@pytest.mark.parametrize("generation", GENERATIONS)
def test_plain_testbench_passes_on_icarus(design_b3, generation, tmp_path):
    bundle, verilog = design_b3
    v = bundle.vectors
    text = run_plain_testbench(verilog, v["conv1.in"][:N_IMAGES], v["logits"][:N_IMAGES], v["pred"][:N_IMAGES],
                               tmp_path, generation=generation)
    assert f"PASS {N_IMAGES} images" in text, text[-2000:]
    assert "FAIL" not in text, text[-2000:]


def test_plain_testbench_catches_a_wrong_logit(design_b3, tmp_path):
    """The testbench itself fails when an expected value is off by one (it is not vacuous)."""
    bundle, verilog = design_b3
    v = bundle.vectors
    logits = v["logits"][:1].copy()
    logits[0, 3] += 1
    text = run_plain_testbench(verilog, v["conv1.in"][:1], logits, v["pred"][:1], tmp_path, generation="2012")
    assert "FAIL image 0 beat 3" in text and "PASS" not in text, text[-2000:]
