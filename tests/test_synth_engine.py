"""``asqhw synth`` on graph bundles (the descriptor-driven engine) and the link built into the
bitstream: the block-memory check before synthesis, the refusals, the board top's link, the
report's link figures. Fast: nothing here synthesizes (the place-and-route runs are marked)."""

import shlex
import subprocess
from pathlib import Path

import pytest

from asqhw.cli import main
from asqhw.errors import UserError
from hw.eda.boards import get_board
from hw.eda.synth import (
    _board_top,
    _link_block,
    _link_rates,
    block_memory_fit,
    blocks_for,
    check_link_baud,
    engine_memories,
    memory_refusal,
)

ROOT = Path(__file__).resolve().parents[1]
RESNET20_B3 = ROOT / "models" / "resnet20-digits32-b3"


def _engine(bundle, pe=4):
    from hw.eda.generate import build_engine

    engine = build_engine(bundle, pe=pe)
    for unit in (engine, engine.asq_unit):  # built for its figures only, never elaborated
        if unit is not None:
            unit._MustUse__silence = True
    return engine


def test_blocks_for_takes_the_cheapest_shape_of_each_family():
    assert blocks_for(1024, 4, "ice40") == 1  # 1024 x 4
    assert blocks_for(1088, 21, "ice40") == 9  # 512 x 8: 3 wide, 3 deep (1024 x 4 would take 12)
    assert blocks_for(67456, 12, "ecp5") == 51  # 4096 x 4: 3 wide, 17 deep
    assert blocks_for(32768, 26, "ecp5") == 48  # 2048 x 9: 3 wide, 16 deep
    assert blocks_for(300, 32, "ecp5") == 1  # 512 x 36


def test_resnet20_block_memory_on_each_board():
    engine = _engine(RESNET20_B3)
    memories = {m["name"]: m for m in engine_memories(engine)}
    # the residual adds are fused into their convs, which read the skip branch through the operand
    # port: every activation bank is built once
    assert memories["activation bank 1"]["copies"] == 1
    assert (memories["activation bank 1"]["words"], memories["activation bank 1"]["word_bits"]) == (32768, 26)
    assert memories["weight ROM 1 (post)"]["kbit"] == pytest.approx(67456 * 12 / 1024, abs=0.1)
    ulx3s = block_memory_fit(engine_memories(engine), get_board("ulx3s"))
    assert ulx3s["fits"] and ulx3s["blocks_data"] == 8 + 48 + 1 + 51
    assert ulx3s["blocks_data"] <= ulx3s["blocks"] <= ulx3s["blocks_available"] == 208
    # a short, wide ROM is cheaper in logic (Yosys' memory_libmap: 1/16 per ROM bit against a block)
    assert {m["name"]: m["in_logic"] for m in ulx3s["memories"]}["descriptor ROM"]
    ice = block_memory_fit(engine_memories(engine), get_board("icebreaker"))
    assert not ice["fits"] and ice["blocks_data"] > 400 and ice["bram_kbit_available"] == 120
    assert ice["spram_kbit_available"] == 1024 and ulx3s["spram_kbit_available"] == 0
    line = memory_refusal(ice, get_board("icebreaker"), "the engine")
    assert "\n" not in line and "SB_RAM40_4K" in line and "120 kbit" in line and "1024 kbit of SPRAM" in line
    assert "weight ROM 1 (post) 67456 x 12 = 790.5 kbit" in line


def test_without_a_skip_branch_each_bank_is_built_once_and_small_roms_go_to_logic():
    from types import SimpleNamespace as NS

    plan = NS(banks=[(4, 1024), (21, 1088)], steps=[NS(skip=None, kind="conv")] * 6, pe=4,
              arrays=[NS(kind="int", w_bits=8), NS(kind="post", w_bits=3)], weight_roms=[[0] * 420, [0] * 1728],
              constants=[0] * 74)
    engine = NS(plan=plan, m_width=17, a_width=1, b_width=33, desc_layout=NS(size=230), asq_unit=None)
    memories = engine_memories(engine)
    assert [m["copies"] for m in memories if m["kind"] == "ram"] == [1, 1]
    fit = block_memory_fit(memories, get_board("icebreaker"))
    blocks = {m["name"]: (m["blocks"], m["in_logic"]) for m in fit["memories"]}
    # measured with Yosys on the digits graph's engine: act banks 1 + 9, weights 4 + 6, the
    # 74 x 51 constant table and the 6 x 230 descriptor ROM in logic (22 blocks with the ASQ unit's)
    assert blocks == {"activation bank 0": (1, False), "activation bank 1": (9, False),
                      "weight ROM 0 (int)": (4, False), "weight ROM 1 (post)": (6, False),
                      "constant table": (0, True), "descriptor ROM": (0, True)}
    assert fit["fits"] and fit["blocks"] == fit["blocks_data"] == 20
    plan.steps = [NS(skip=None, kind="conv")] * 5 + [NS(skip="a", kind="pointwise")]
    assert [m["copies"] for m in engine_memories(engine) if m["kind"] == "ram"] == [2, 2]
    # a conv step (an add fused into it) reads its skip branch through the operand port
    plan.steps = [NS(skip=None, kind="conv")] * 5 + [NS(skip="a", kind="conv")]
    assert [m["copies"] for m in engine_memories(engine) if m["kind"] == "ram"] == [1, 1]


def test_synth_refuses_resnet20_on_the_icebreaker_before_anything_is_written(tmp_path, capsys, no_synthesis):
    out = tmp_path / "ice"
    assert main(["synth", "--board", "icebreaker", "--model", str(RESNET20_B3), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs at least" in err and "SB_RAM40_4K" in err and "kbit" in err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--simd", "8"], "--simd 8: the graph engine takes one input position per cycle"),
    (["--mul", "int"], "--mul int: a graph bundle runs each node's own weight format"),
    (["--bits", "4"], "--bits 4: the graph bundle"),
    (["--window", "2"], "--window 2: 2 images in flight need a 3072-byte input buffer"),
])
def test_synth_refuses_chain_options_against_a_graph_bundle(argv, message, tmp_path, capsys, no_synthesis):
    out = tmp_path / "o"
    assert main(["synth", "--board", "ulx3s", "--model", str(RESNET20_B3), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_make_synth_passes_a_bundles_own_bits():
    def command(*variables):
        done = subprocess.run(["make", "--no-print-directory", "-n", "synth", *variables], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if " synth " in ln and "asqhw" in ln]
        return shlex.split(lines[-1])[1:]

    assert command("BOARD=ulx3s", "MODEL=models/resnet20-digits32-b3") == [
        "synth", "--board", "ulx3s", "--model", "models/resnet20-digits32-b3"]
    assert command("BOARD=icebreaker") == ["synth", "--board", "icebreaker", "--bits", "3"]
    assert command("BOARD=icebreaker", "BAUD=3000000", "REPLY=class", "SEEDS=1", "CLOCK=24", "WINDOW=3") == [
        "synth", "--board", "icebreaker", "--bits", "3", "--seeds", "1", "--clock", "24", "--baud", "3000000",
        "--reply", "class", "--window", "3"]


@pytest.fixture
def board_flow(monkeypatch):
    """What ``synthesize_engine`` hands to ``synthesize_top`` (which runs no tool here): its keyword
    arguments, the top as ``top`` and the board as ``board``."""
    import hw.eda.synth

    seen = {}

    def capture(top, board, out_dir, **kwargs):
        seen.update(kwargs, top=top, board=board)
        return {}

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", capture)
    return seen


def test_synthesize_engine_hands_the_engine_and_its_figures_to_the_board_flow(board_flow, tmp_path):
    import hw.eda.synth
    from hw.rtl.engine.core import GraphEngine

    seen = board_flow
    hw.eda.synth.synthesize_engine(RESNET20_B3, "ulx3s", tmp_path / "o", pe=2, seeds=3, clock="auto", progress=False)
    assert isinstance(seen["top"], GraphEngine) and seen["top"].pe == 2 and seen["board"] == "ulx3s"
    engine = seen["extra"]["engine"]
    assert engine["memory_map"]["pe"] == 2 and engine["cycles_per_inference"] == seen["cycles"]
    assert engine["mac_bound_cycles"] == -(-engine["macs"] // 2) and engine["block_memory"]["fits"]
    assert seen["input_bytes"] == 3 * 32 * 32 and seen["out_beats"] == 10 and seen["macs_per_cycle"] == 2
    assert seen["link_options"] == {"fifo_depth": 0} and seen["reply"] == "logits"
    assert seen["design"]["engine"] and seen["design"]["model"] == "resnet20-digits32"
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ the link


def test_board_top_at_12_mbaud_with_the_class_reply(shipped_bundle):
    from golden.model import load_bundle
    from hw.eda.generate import build_top
    from hw.eda.pll import fastest_at_most
    from hw.link.board import link_options
    from hw.rtl.clocking import PllClocked

    board = get_board("icebreaker")
    top = build_top(load_bundle(shipped_bundle(3), vectors=False), pe=4, simd=4, mul=None)
    options = link_options(top, reply="class", window=9)
    setting = fastest_at_most("ice40", 12.0, 48.0)
    wrapped, mhz = _board_top(top, board, setting, 12_000_000, options)
    assert isinstance(wrapped, PllClocked) and mhz == pytest.approx(48.0)
    link = wrapped.inner.link
    assert (link.divisor, link.out_bytes, link.fifo_depth) == (4, 1, 8 * 64)
    block = _link_block(link, 12_000_000, reply="class", window=9, input_beats=64, out_beats=1)
    assert block["bytes_in_per_image"] == 64 and block["bytes_out_per_image"] == 1
    assert block["images_per_s_pipelined"] == 18_750
    rates = _link_rates(block, cycles=7799, mhz=48.0)
    assert rates["images_per_s_over_link"] == pytest.approx(48e6 / 7799, rel=1e-3)  # compute sets it
    assert rates["limited_by"] == "compute"
    # the same clock cannot make 12 Mbaud at 26.625 MHz: the refusal names what it can make
    slow = fastest_at_most("ice40", 12.0, 26.7)
    with pytest.raises(UserError, match="the fastest FT2232H rate it makes is 5333333 baud"):
        _board_top(top, board, slow, 12_000_000, options)


def test_the_auto_clock_passes_over_settings_that_cannot_make_the_baud():
    from hw.eda.pll import fastest_at_most
    from hw.eda.synth import PnrReport, _makes_baud, choose_clock

    board = get_board("icebreaker")
    calls = []

    def route(setting):
        mhz = board.clock_mhz if setting is None else setting.f_out
        calls.append(mhz)
        report = PnrReport("icebreaker", "iCE40UP5K", "ICESTORM_LC", 1, 5280, fmax_mhz={"clk": 26.0},
                           constraint_mhz={"clk": mhz})
        return [report], None, {"kind": "uart"}, mhz

    # 25.875 MHz (the fastest setting under 26) makes 3 Mbaud 4 % off at divisor 9, and 25.5 and
    # 25.125 miss too: the search takes the fastest one that makes it within 2 %, 24.375 MHz (divisor 8)
    assert fastest_at_most("ice40", 12.0, 26.0).f_out == 25.875 and not _makes_baud(board, 3_000_000, 25.875)
    _, _, _, info = choose_clock(route, board, "auto", estimate={"fmax_mhz": 26.0},
                                 usable=lambda mhz: _makes_baud(board, 3_000_000, mhz))
    assert calls == [24.375] and info["mhz"] == 24.375 and info["passes"][-1]["met_all_seeds"]
    calls.clear()
    choose_clock(route, board, "auto", estimate={"fmax_mhz": 26.0})
    assert calls[0] == 25.875


def test_link_rates_one_image_at_a_time_add_line_and_compute():
    block = {"bytes_in_per_image": 64, "bytes_out_per_image": 55, "bytes_per_s": 11_520.0, "window": 1}
    rates = _link_rates(block, cycles=12_000, mhz=12.0)
    assert rates["images_per_s_over_link"] == pytest.approx(1 / (119 / 11_520 + 1e-3), rel=1e-3)


def test_check_link_baud_per_board():
    assert check_link_baud(get_board("icebreaker"), 3_000_000, 24e6) == 8
    with pytest.raises(UserError, match="cannot make 3100000 baud"):
        check_link_baud(get_board("icebreaker"), 3_100_000, 24e6)  # not an FT2232H rate
    with pytest.raises(UserError, match="FT231X makes at most 3000000 baud"):
        check_link_baud(get_board("ulx3s"), 12_000_000, 60e6)
    assert check_link_baud(get_board("ulx3s"), 3_000_000, 45e6) == 15


@pytest.fixture
def no_synthesis(monkeypatch):
    """Fail loudly instead of placing and routing (a refusal that lets a design through)."""
    import hw.eda.synth

    def refuse(*args, **kwargs):
        raise AssertionError("synthesis started: the refusal did not happen")

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", refuse)


def test_synth_refuses_a_baud_its_fixed_clock_cannot_make_before_any_work(tmp_path, capsys, no_synthesis):
    out = tmp_path / "fast"
    assert main(["synth", "--board", "icebreaker", "--clock", "24", "--baud", "12000000", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot make 12000000 baud" in err and "the fastest FT2232H rate it makes is 8000000 baud" in err
    assert not out.exists()
    assert main(["synth", "--board", "icebreaker", "--baud", "10000000", "--out", str(out)]) == 2
    assert "FT2232H cannot make 10000000 baud" in capsys.readouterr().err
    assert main(["synth", "--board", "icebreaker", "--window", "0", "--out", str(out)]) == 2
    assert "--window 0" in capsys.readouterr().err
    assert main(["synth", "--board", "icebreaker", "--window", "40", "--reply", "class", "--out", str(out)]) == 2
    assert "input buffer" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------- place and route (slow)


@pytest.mark.synth
@pytest.mark.slow
# the ULX3S uart resource's rts/dtr pins are requested whole by LinkOnBoard's dir={"rx", "tx"}
@pytest.mark.filterwarnings("ignore:Using platform.request without:DeprecationWarning")
def test_the_digits_graph_engine_places_and_routes_on_the_ulx3s_with_its_memory_map(tmp_path, shipped_checkpoint):
    import json

    from golden.bundle import read_bundle
    from hw.eda.synth import synthesize_engine

    bundle, out = tmp_path / "digits-graph", tmp_path / "ulx3s"
    assert main(["export", str(shipped_checkpoint(3)), str(bundle), "--quiet"]) == 0
    # A chain-shaped graph: `asqhw synth` gives it the chain accelerator, so the engine is built here
    # through the flow's own entry point.
    synthesize_engine(read_bundle(bundle, vectors=False), "ulx3s", out, seeds=1, clock=25.0, progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["untimed_paths"]["count"] == 0 and report["design"]["top"] == "graph_engine"
    engine = report["engine"]
    assert engine["memory_map"]["descriptors"]["count"] == 6
    assert engine["cycles_per_inference"] > engine["mac_bound_cycles"]
    assert report["cycles_per_inference"] == engine["cycles_per_inference"]
    # what the plan said before synthesis: an upper estimate and a floor of the block RAMs used
    fit = engine["block_memory"]
    assert fit["blocks_data"] <= report["resources"]["block_ram"]["used"] <= fit["blocks"]
    images_per_s = report["inferences_per_s"]["at_board_clock"]
    assert images_per_s == pytest.approx(25e6 / engine["cycles_per_inference"], rel=1e-2)
    link = report["link"]
    assert link["bytes_in_per_image"] == 64 and link["bytes_out_per_image"] == 10 * link["bytes_out_per_beat"]


# ------------------------------------------------------------------------------ weights in SPRAM


def test_the_memory_fit_counts_the_loaded_weight_store_in_spram():
    from hw.eda.synth import engine_weight_store

    ice, ulx3s = get_board("icebreaker"), get_board("ulx3s")
    # PE 5: 3-bit POST words of 15 bits, one 16-bit lane, 56256 deep: the four SB_SPRAM256KA
    engine, fit = engine_weight_store(RESNET20_B3, ice, 5, None)
    assert engine.weight_store == "spram" and engine.weight_space.lanes == 1
    memories = {m["name"]: m for m in fit["memories"]}
    store = memories["weight store (SPRAM, loaded)"]
    assert (store["words"], store["word_bits"], store["blocks"], store["spram"]) == (56256, 16, 0, 4)
    assert "weight ROM 0 (int)" in memories and "weight ROM 1 (post)" not in memories  # the int edges keep ROMs
    assert fit["spram_used"] == fit["spram_available"] == 4 and fit["kbit"]["spram"] == 879.0
    # the weights fit; the activations do not: a 26-bit bank of 32768 words
    assert not fit["fits"] and fit["blocks_data"] > 240
    line = memory_refusal(fit, ice, "the engine")
    assert "\n" not in line and "the weights fit the SPRAM: 4 of 4 SB_SPRAM256KA" in line
    assert "the activations alone take 960 kbit in 240 blocks" in line and "copies" not in line
    assert "the widest bank 26 bits" in line and "stored as a 8-bit code (the skip branch too) about 384.0 kbit" in line
    # PE 4: 12-bit words in 16-bit lanes need 67456 words, five cells
    _, fit4 = engine_weight_store(RESNET20_B3, ice, 4, "spram")
    assert fit4["spram_used"] == 5 and "the weights do not fit the SPRAM: 5 of 4" in memory_refusal(fit4, ice, "x")
    # a board without SPRAM: ROMs by default, SPRAM refused by name
    engine, fit = engine_weight_store(RESNET20_B3, ulx3s, 4, None)
    assert engine.weight_store == "rom" and fit["fits"] and fit["spram_used"] == 0
    with pytest.raises(UserError, match=r"--weights spram: the ulx3s \(LFE5U-85F\) has no SPRAM"):
        engine_weight_store(RESNET20_B3, ulx3s, 4, "spram")


def test_synth_weights_spram_is_refused_where_it_makes_no_sense(tmp_path, capsys, no_synthesis):
    out = tmp_path / "o"
    assert main(["synth", "--board", "ulx3s", "--model", str(RESNET20_B3), "--weights", "spram",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--weights spram: the ulx3s (LFE5U-85F) has no SPRAM" in err and err.count("\n") == 1
    assert main(["synth", "--board", "icebreaker", "--bits", "3", "--weights", "spram", "--out", str(out)]) == 2
    assert "the chain accelerator keeps its weights in ROMs" in capsys.readouterr().err
    assert not out.exists()


def test_synth_on_the_icebreaker_says_resnet20_weights_are_in_spram_and_what_still_does_not_fit(
        tmp_path, capsys, no_synthesis):
    out = tmp_path / "ice"
    assert main(["synth", "--board", "icebreaker", "--model", str(RESNET20_B3), "--pe", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "weights in SPRAM" in err and "the weights fit the SPRAM: 4 of 4" in err and "activations" in err
    assert not out.exists()


def test_synthesize_engine_reports_what_the_host_loads(board_flow, monkeypatch, tmp_path):
    import hw.eda.synth
    from hw.link.weights import load_bytes
    from hw.rtl.engine.planner import weight_checksum, weight_words

    seen = board_flow
    # ResNet-20's activations do not fit the iCEBreaker: the memory check is passed over to see what the flow gets
    monkeypatch.setattr(hw.eda.synth, "block_memory_fit", lambda memories, board: {"fits": True, "memories": memories})
    hw.eda.synth.synthesize_engine(RESNET20_B3, "icebreaker", tmp_path / "o", pe=5, progress=False, weights="spram")
    engine = seen["top"]
    weights = seen["extra"]["engine"]["weights"]
    words = weight_words(engine.plan)
    assert engine.weight_store == "spram" and seen["design"]["weights"] == "spram"
    assert weights == {"store": "spram", "lanes": 1, "depth": 56256, "words16": 56256,
                       "checksum": weight_checksum(words), "beat_bytes": 1, "load_bytes": len(load_bytes(words, 1)),
                       "ack_value_bits": engine.word_width}
    assert weights["load_bytes"] == 1 + 2 * 56256 + 2


def test_the_class_only_reply_is_refused_on_an_engine_that_loads_its_weights(monkeypatch, tmp_path):
    import hw.eda.synth

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", lambda *a, **k: pytest.fail("synthesis started"))
    monkeypatch.setattr(hw.eda.synth, "block_memory_fit", lambda memories, board: {"fits": True, "memories": memories})
    with pytest.raises(UserError, match=r"--reply class with the weights in SPRAM: a loaded engine answers the "
                                        r"weight load with one beat"):
        hw.eda.synth.synthesize_engine(RESNET20_B3, "icebreaker", tmp_path / "o", pe=5, progress=False,
                                       weights="spram", reply="class")
    assert not (tmp_path / "o").exists()


def test_the_host_reads_from_the_report_whether_and_what_to_load(tmp_path):
    import json

    from hw.link.weights import prepare_board

    class Port:
        written = b""

        def write(self, data):
            self.written += data

        def read(self, n):
            return bytes([1]) + bytes(n - 2) + bytes([1 << 2])  # value 1, last at bit 18 (18-bit values)

    rom = tmp_path / "rom.json"
    rom.write_text(json.dumps({"design": {"pe": 4}, "engine": {"weights": {"store": "rom"}}}))
    port = Port()
    assert prepare_board(port, RESNET20_B3, rom) == b"" and port.written == b""
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"design": {"pe": 5}, "engine": {"weights": {
        "store": "spram", "words16": 56256, "checksum": 1, "beat_bytes": 1, "ack_value_bits": 18}}}))
    with pytest.raises(UserError, match="expects 56256 words with checksum 1: the bitstream was built from another"):
        prepare_board(port, RESNET20_B3, other)
    assert port.written == b""  # nothing sent on a mismatch
