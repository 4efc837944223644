"""`asqhw verilog` / `asqhw sim` on graph (format-2) bundles: the engine's Verilog and manifest, refusals."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from asqhw.cli import main
from asqhw.errors import UserError
from golden.bundle import SHIPPED_MODELS
from hw.eda.generate import generate_engine_verilog, is_graph_bundle, uses_engine

RESNET20_B3 = SHIPPED_MODELS / "resnet20-digits32-b3"


def test_verilog_on_a_graph_bundle_writes_the_engine_and_its_memory_map(tmp_path, capsys):
    out = tmp_path / "engine"
    assert main(["verilog", "--model", str(RESNET20_B3), "--out", str(out), "--no-lint"]) == 0
    text = (out / "graph_engine.v").read_text()
    assert "module graph_engine(" in text
    man = json.loads((out / "manifest.json").read_text())
    gen = man["generator"]
    assert (gen["top"], gen["bits"], gen["pe"], gen["simd"]) == ("graph_engine", 3, 4, 1)
    assert man["graph"] == json.loads((RESNET20_B3 / "manifest.json").read_text())["graph"]
    mem = gen["memory_map"]
    assert mem["activation"]["bits"] < mem["activation"]["bits_without_reuse"]
    assert mem["descriptors"]["count"] == len(mem["descriptors"]["steps"]) > 20
    # 40.8 M MACs of ResNet-20 at 32x32; the schedule within 15 % of PE MACs every cycle
    assert gen["mac_bound_cycles"] == -(-gen["macs"] // 4) and gen["macs"] > 40_000_000
    assert gen["mac_bound_cycles"] <= gen["cycles_per_inference"] < 1.15 * gen["mac_bound_cycles"]
    printed = capsys.readouterr().out
    assert "cycles per image" in printed and "MAC bound" in printed and "memory map:" in printed


@pytest.mark.parametrize("option, message", [
    (["--mul", "post"], "--mul post: a graph bundle"),
    (["--simd", "8"], "--simd 8: the graph engine"),
    (["--bits", "4"], "--bits 4: the graph bundle"),
])
def test_verilog_on_a_graph_bundle_refuses_format1_options(option, message, tmp_path, capsys):
    out = tmp_path / "engine"
    assert main(["verilog", "--model", str(RESNET20_B3), "--out", str(out), *option]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_graph_the_engine_refuses_is_one_line_and_writes_nothing(tmp_path):
    from tests.engine_graphs import asq_block_add_inputs

    graph, weights = asq_block_add_inputs(np.random.default_rng(2), lambda names: [names[0], names[0]])
    bundle = SimpleNamespace(graph=graph, weights=weights, manifest=None, path=None)
    out = tmp_path / "engine"
    with pytest.raises(UserError, match="node 'c2'") as err:
        generate_engine_verilog(bundle, out_dir=out)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_only_graphs_that_are_not_chains_run_on_the_engine(format1_bundle):
    """ResNet-20 runs on the engine; the digits graphs (chain-shaped) and format-1 bundles on the chain
    accelerator."""
    assert is_graph_bundle(RESNET20_B3) and uses_engine(RESNET20_B3)
    assert is_graph_bundle(SHIPPED_MODELS / "digits-b3") and not uses_engine(SHIPPED_MODELS / "digits-b3")
    assert not is_graph_bundle(format1_bundle) and not uses_engine(format1_bundle)


@pytest.mark.parametrize("option, message", [
    (["--simulator", "icarus"], "verilator only"),
    (["--stall", "0.5"], "--stall"),
    (["--waves"], "--waves"),
])
def test_sim_on_a_graph_bundle_refuses_what_the_engine_testbench_cannot_do(option, message, capsys):
    assert main(["sim", "--model", str(RESNET20_B3), "--count", "1", *option]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_verilog_weights_spram_writes_the_cells_and_what_the_host_loads(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["verilog", "--model", str(RESNET20_B3), "--weights", "spram", "--out", str(out)]) == 0
    text = (out / "graph_engine.v").read_text()
    # PE 4: 67456 words of one 16-bit lane, five rows of cells (one more than the UP5K has: synth refuses it)
    assert text.count("SB_SPRAM256KA") == 5
    weights = json.loads((out / "manifest.json").read_text())["generator"]["weights"]
    assert weights["store"] == "spram" and weights["words16"] == 67456 and weights["lanes"] == 1
    assert "weights in SPRAM, loaded at run time" in capsys.readouterr().out
