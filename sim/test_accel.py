"""The whole accelerator on Icarus and Verilator against the golden model, image by image.

cocotb side (:func:`accelerator_matches_golden`): a :class:`sim.streams.StreamDriver` sends each
image's input codes on ``i`` with random idle cycles; a passive :class:`sim.streams.StreamMonitor`
on ``i`` hands the codes the design actually took to the reference model
(:class:`sim.reference.NetworkReference`, golden inference), which queues that image's expected
logits, class and layer codes in an in-order checker (:class:`sim.scoreboard.InOrderChecker`); a
second monitor takes the logits and the class from ``o`` with random back-pressure and feeds the
checker (monitor -> model -> checker).
After each image the accelerator's activation buffers still hold every layer's input codes; they are
read back and compared with golden's too, so a wrong logit is traced to the first layer that
differs (image, layer, index, expected, got). The testbench writes a JSON summary: RTL and golden
accuracy, cycles per image, simulated cycles per second, mismatches.

pytest side: the full digits test split (360 images) on Verilator at BITS 3 and 4, a subset on
Icarus, and two deliberately broken designs (one weight ROM bit flipped; one POST table entry
rounded the other way) that must fail.
"""

import json
import re
import time
from pathlib import Path

import cocotb
import numpy as np
import pytest
from cocotb.triggers import ReadOnly, RisingEdge

from golden.formats import OUT_WIDTH
from sim.tb import CLOCK_NS


class LayerTaps:
    """Reads each layer's input codes back from ``asq_accel``'s activation buffers.

    Layout (hw/rtl/accel/buffers.py): the input of layer ``L`` is the memory of the buffer ``act_<L>``, whose word
    holds ``lanes`` codes of ``act_bits`` bits: channel ``c`` in lane ``c % lanes`` (bits
    ``lane * act_bits`` up) of the word at ``(c // lanes) * H * W + y * W + x``; fc's input is one
    code per word in (C, H, W) order. The first layer's buffer holds the image itself and is skipped.
    """

    def __init__(self, dut, ref):
        self.layers = []
        for layer in ref.bundle.layers[1:]:
            name, bits = layer.name, layer.act_in.bits
            buffer = getattr(dut, f"act_{name}", None)
            mem = getattr(buffer, "memory", None) if buffer is not None else None
            if mem is None:
                raise AssertionError(f"asq_accel has no activation buffer act_{name}.memory for layer {name}")
            width = len(mem[0])
            if width % bits:
                raise AssertionError(f"act_{name} words are {width} bits, not a multiple of {bits}")
            self.layers.append((name, mem, bits, width // bits))

    @staticmethod
    def read(mem, bits, lanes, shape):
        """The codes of one layer input, shaped like golden's ``(C, H, W)`` (or ``(N,)`` for fc)."""
        c, pixels = (shape[0], shape[1] * shape[2]) if len(shape) == 3 else (shape[0], 1)
        words = [mem[a].value.to_unsigned() for a in range(-(-c // lanes) * pixels)]
        mask = (1 << bits) - 1
        out = np.empty((c, pixels), dtype=np.int64)
        for ch in range(c):
            base, shift = (ch // lanes) * pixels, (ch % lanes) * bits
            out[ch] = [(words[base + p] >> shift) & mask for p in range(pixels)]
        return out.reshape(shape)

    def check(self, image, expected_inputs, checker):
        """Queue the model's codes of every layer input and compare them with the buffers."""
        for name, mem, bits, lanes in self.layers:
            expected = np.asarray(expected_inputs[name])
            checker.expect(image, f"{name}.in", expected.ravel())
            checker.observe(self.read(mem, bits, lanes, expected.shape).ravel())


@cocotb.test()
async def accelerator_matches_golden(dut):
    """Every image: every logit, the class and every layer's codes equal the golden model."""
    from tqdm import tqdm

    from asqhw.atomic import atomic_write_text
    from sim.reference import NetworkReference
    from sim.scoreboard import InOrderChecker
    from sim.streams import StreamDriver, StreamMonitor
    from sim.tb import (
        pack_fields,
        start_clock_and_reset,
        start_watchdog,
        tb_params,
        tb_rng,
        unpack_fields,
        unpack_value_last,
    )

    params = tb_params()
    ref = NetworkReference(params["bundle"])
    images, stall = params["images"], params["stall"]
    n_logits = ref.logits.shape[1]
    out_layer = ref.logit_layer
    await start_clock_and_reset(dut, idle=[dut.i__valid])

    logits = InOrderChecker(f"asq_accel output (layer {out_layer}.out: index 0..{n_logits - 1} logits, "
                            f"{n_logits} the class)")
    layers = InOrderChecker("asq_accel layer inputs (layer <name>.in: the codes that layer reads, "
                            "index c*H*W + y*W + x)")
    taps = LayerTaps(dut, ref) if params.get("check_layers", True) else None
    bar = tqdm(total=len(images), unit="img", disable=not params.get("progress"),
               desc=f"{params.get('simulator', '')} b{ref.bundle.manifest.bits}")
    state = {"beats": [], "done": 0, "cycles": [], "preds": {}, "taken": [], "sent": 0,
             "expected_inputs": []}
    n_codes = ref.inputs[0].size

    def on_input(code):
        # monitor -> model -> checker: the model predicts from the codes the design accepted.
        state["taken"].append(code)
        if len(state["taken"]) < n_codes:
            return
        image = images[state["sent"]]
        predicted = ref.predict(state["taken"])
        if predicted["logits"] != ref.expected_logits(image):
            raise AssertionError(f"image {image}: the design took other input codes than the driver sent")
        logits.expect(image, f"{out_layer}.out", predicted["logits"] + [predicted["pred"]])
        state["expected_inputs"].append(predicted["inputs"])
        state["taken"], state["sent"] = [], state["sent"] + 1

    def unpack(value):
        return unpack_value_last(value, OUT_WIDTH)

    async def read_cycles():
        # After the class beat's transfer edge has settled, the counter holds this inference's
        # cycles, the class cycle included (the next image cannot start before the next edge).
        await ReadOnly()
        state["cycles"].append(dut.cycles.value.to_unsigned())

    def on_beat(beat):
        value, last = beat
        state["beats"].append(value)
        if not last:
            return
        cocotb.start_soon(read_cycles())
        image = images[state["done"]]
        got = state["beats"]
        state["preds"][image] = got[-1]
        logits.observe(got)
        state["beats"] = []
        if taps is not None:
            taps.check(image, state["expected_inputs"][state["done"]], layers)
        state["done"] += 1
        bar.update()

    StreamMonitor(dut, "i", passive=True, callback=on_input,
                  unpack=lambda v: unpack_fields(v.to_unsigned(), [(8, True)])[0]).start(keep=False)
    monitor = StreamMonitor(dut, "o", unpack=unpack, callback=on_beat, rng=tb_rng("o"),
                            stall_prob=stall).start(keep=False)
    driver = StreamDriver(dut, "i", rng=tb_rng("i"), idle_prob=stall,
                          pack=lambda code: pack_fields([(code, 8, True)]))
    # Stalls add a few cycles per beat at most; twice the model's cycles is far beyond any stall.
    limit = params.get("max_cycles") or len(images) * 2 * (int(params.get("cycles_model") or 10000) + 1000)
    watchdog = start_watchdog(limit, f"{len(images)} images")
    t0, sim0 = time.perf_counter(), cocotb.utils.get_sim_time("ns")
    for image in images:
        await driver.send_all([int(c) for c in ref.image_codes(image).ravel()])
    await monitor.wait_count(len(images) * (n_logits + 1))
    await RisingEdge(dut.clk)
    wall = time.perf_counter() - t0
    sim_cycles = (cocotb.utils.get_sim_time("ns") - sim0) / CLOCK_NS
    monitor.stop()
    watchdog.cancel()
    bar.close()

    done = sorted(state["preds"])
    labels = ref.labels
    summary = {
        "simulator": params.get("simulator"), "design": params.get("design"),
        "bundle": params["bundle"], "images": len(images), "stall": stall, "seed": params.get("seed"),
        "rtl_accuracy": float(np.mean([state["preds"][i] == labels[i] for i in done])) if done else None,
        "golden_accuracy": ref.golden_accuracy(images),
        "float_accuracy": ref.bundle.manifest.accuracy.get("float"),
        "cycles_per_image": float(np.mean(state["cycles"])) if state["cycles"] else None,
        "cycles_min": min(state["cycles"], default=None), "cycles_max": max(state["cycles"], default=None),
        "cycles_model": params.get("cycles_model"),
        "sim_cycles": sim_cycles, "wall_s": wall, "cycles_per_s": sim_cycles / wall if wall else None,
        "images_per_s": len(images) / wall if wall else None,
        "logit_mismatches": len(logits.mismatches), "layer_mismatches": len(layers.mismatches),
        "first_mismatches": [vars(m) for m in (layers.mismatches + logits.mismatches)[:20]],
        "report": "\n".join([layers.report(), logits.report()]),  # earliest layer first
    }
    atomic_write_text(params["summary"], json.dumps(summary, indent=1, default=int) + "\n")
    dut._log.info("%s", summary["report"])
    layers.finish()
    logits.finish()
    assert summary["rtl_accuracy"] == summary["golden_accuracy"]


# ----------------------------------------------------------------------------- pytest side


def _bundle(bits):
    from sim.accel import default_bundle

    return default_bundle(bits)


def _assert_bit_exact(summary, n_images):
    assert summary["passed"], summary["error"] + "\n" + summary["report"]
    assert summary["images"] == n_images
    assert summary["logit_mismatches"] == 0 and summary["layer_mismatches"] == 0
    # The printed accuracy is the RTL's and equals golden's (which the bundle recorded at export).
    assert summary["rtl_accuracy"] == summary["golden_accuracy"]
    print(f"\n{summary['simulator']}: {n_images} images, RTL accuracy {summary['rtl_accuracy']:.4f} "
          f"(golden {summary['golden_accuracy']:.4f}), {summary['cycles_per_image']:.0f} cycles/image, "
          f"{summary['cycles_per_s']:.0f} cycles/s")


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("bits", [3, 4])
def test_full_split_on_verilator(bits):
    """The whole digits test split, every logit and every layer, on Verilator."""
    from sim.accel import run_accel

    summary = run_accel("verilator", _bundle(bits))
    _assert_bit_exact(summary, 360)


@pytest.mark.sim
@pytest.mark.parametrize("bits, count", [(3, 8), (4, 8), (2, 4), (8, 4)])
def test_subset_on_icarus(bits, count):
    """The first images of the split on Icarus (the whole split runs under ``make sim``)."""
    from sim.accel import run_accel

    summary = run_accel("icarus", _bundle(bits), images=range(count))
    _assert_bit_exact(summary, count)


@pytest.mark.sim
@pytest.mark.parametrize("pe, simd", [(8, 2), (2, 8)])
def test_other_generator_parameters_on_icarus(pe, simd):
    """Non-default PE x SIMD layouts of the same bundle are bit-exact too."""
    from sim.accel import run_accel

    summary = run_accel("icarus", _bundle(3), images=range(2), pe=pe, simd=simd)
    assert (summary["design"]["pe"], summary["design"]["simd"]) == (pe, simd)
    _assert_bit_exact(summary, 2)


@pytest.mark.sim
def test_cycles_match_the_generator_model_without_stalls():
    """With no stalls, the ``cycles`` port reads what the generator wrote into its manifest."""
    from sim.accel import run_accel

    summary = run_accel("verilator", _bundle(3), images=range(3), stall=0.0)
    _assert_bit_exact(summary, 3)
    assert summary["cycles_min"] == summary["cycles_max"] == summary["cycles_model"]
    # ... and with stalls the inference takes longer (the counter runs through them).
    stalled = run_accel("verilator", _bundle(3), images=range(3), stall=0.3)
    assert stalled["cycles_max"] > summary["cycles_model"]


def _broken_copy(verilog: Path, out: Path, pattern: str, mutate) -> Path:
    """Copy ``verilog`` with every line matching ``pattern`` rewritten by ``mutate(match)``."""
    text = verilog.read_text()
    broken, count = re.subn(pattern, mutate, text, flags=re.M)
    assert count, f"no line matches {pattern!r} in {verilog}"
    assert broken != text
    out.write_text(broken)
    return out


#: One ROM word initialiser as Yosys writes it (hex or decimal).
ROM_WORD = r"(?P<head>\s*{name}\[(?P<addr>{addr})\] = )(?P<width>\d+)'(?P<base>[hd])(?P<value>[0-9a-f]+);"


def _word(match) -> tuple[int, int]:
    return int(match["width"]), int(match["value"], 16 if match["base"] == "h" else 10)


def _flip_sign_of_first_conv1_weight(match):
    # weights_wide word 0 holds conv1's int8 weights of PE output channels (PE 0 in bits 0..7):
    # bit 7 is the two's complement sign bit of channel 0's first weight, worth 128 either way.
    width, value = _word(match)
    return f"{match['head']}{width}'h{value ^ (1 << 7):0{(width + 3) // 4}x};"


def _round_other_way(match):
    # T[a] = round(a * sqrt2 * 2^F) one LSB lower: that rounding step taken the other way.
    width, value = _word(match)
    return f"{match['head']}{width}'h{value - 1:0{(width + 3) // 4}x};"


FLAWS = {
    # flaw: (pattern, mutation, layer whose input codes must show it first)
    "rom-bit": (ROM_WORD.format(name="weights_wide", addr="0"), _flip_sign_of_first_conv1_weight,
                lambda layer: layer == "conv2.in"),  # conv1's output
    "rounding": (ROM_WORD.format(name="post_table", addr="3"), _round_other_way,
                 lambda layer: layer != "conv2.in"),  # conv1 runs on the 8-bit engine, no table
}


@pytest.mark.sim
@pytest.mark.parametrize("flaw", sorted(FLAWS))
def test_broken_design_fails(flaw, tmp_path):
    """One flipped weight ROM bit, or T[3] of the POST table rounded down, must fail the test.

    The checker's first mismatch names the image, the first layer whose codes differ, the index,
    expected and got, and that layer is where the flaw first acts.
    """
    from sim.accel import prepare_design, run_accel

    bundle = _bundle(3)
    pattern, mutate, first_layer_ok = FLAWS[flaw]
    broken = _broken_copy(prepare_design(bundle)["verilog"], tmp_path / "asq_accel.v", pattern, mutate)
    summary = run_accel("icarus", bundle, images=range(4), verilog=broken, build_dir=tmp_path / "build")
    assert not summary["passed"]
    assert summary["logit_mismatches"] + summary["layer_mismatches"] > 0
    first = summary["first_mismatches"][0]
    assert set(first) == {"image", "layer", "index", "expected", "got"}
    assert first["expected"] != first["got"]
    assert first_layer_ok(first["layer"]), first
    assert f"image {first['image']} layer {first['layer']} index {first['index']}: expected " \
           f"{first['expected']} got {first['got']}" in summary["report"]


def test_simulated_verilog_is_what_asqhw_verilog_writes(tmp_path):
    """The full-network runs simulate the very text ``asqhw verilog`` writes for the same bundle."""
    from asqhw.cli import main
    from sim.accel import prepare_design

    assert main(["verilog", "--bits", "3", "--out", str(tmp_path), "--no-lint"]) == 0
    design = prepare_design(_bundle(3))
    assert design["verilog"].read_bytes() == (tmp_path / "asq_accel.v").read_bytes()


@pytest.mark.sim
def test_a_design_that_stops_answering_fails_instead_of_hanging(tmp_path):
    """The watchdog: 2 images cannot finish in 5000 cycles (the design needs ~7800 per image)."""
    from sim.accel import run_accel
    from sim.runner import SimulationFailed

    with pytest.raises(SimulationFailed, match="watchdog: 2 images not finished after 5000 cycles"):
        run_accel("icarus", _bundle(3), images=range(2), max_cycles=5000, build_dir=tmp_path / "build")
