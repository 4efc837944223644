"""The descriptor-driven engine: the planner (descriptors, liveness, memory map) and the engine in
Amaranth simulation, bit-exact against golden.graph.run_graph on small random graphs."""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator

from asqhw.errors import UserError
from golden import arith
from golden.graph import Graph, run_graph
from hw.rtl.engine.core import GraphEngine
from hw.rtl.engine.epilogue import TwoTermRequantizer
from hw.rtl.engine.planner import plan_graph
from tests.engine_graphs import (
    asq_block,
    asq_block_add_inputs,
    conv,
    inp,
    mini_resnet,
    pointwise_graph,
    random_graph,
    random_weights,
    req,
    residual_chain,
)


def run_engine(engine, images, stall_rng=None):
    """Each image through ``engine`` in simulation, with random input and output stalls when
    ``stall_rng`` is given; returns the output values (N, outputs) and the cycles of each image."""
    outputs, cycles = [], []

    async def bench(ctx):
        for image in images:
            for v in np.asarray(image).ravel():
                while stall_rng is not None and stall_rng.random() < 0.3:
                    ctx.set(engine.i.valid, 0)
                    await ctx.tick()
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, int(v))
                await ctx.tick().until(engine.i.ready)
            ctx.set(engine.i.valid, 0)
            values = []
            while True:
                ready = stall_rng is None or stall_rng.random() >= 0.3
                ctx.set(engine.o.ready, ready)
                if ready and ctx.get(engine.o.valid):
                    beat = ctx.get(engine.o.payload)
                    values.append(beat.value)
                    await ctx.tick()
                    if beat.last:
                        break
                else:
                    await ctx.tick()
            ctx.set(engine.o.ready, 0)
            outputs.append(values)
            cycles.append(ctx.get(engine.cycles))

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.asarray(outputs, dtype=np.int64), cycles


def _expected(graph, weights, images):
    out = run_graph(graph, weights, images)[graph.output]
    return out.reshape(out.shape[0], -1)


# ----------------------------------------------------------------------------- planner


def _overlap(a, b):
    return a.first <= b.last and b.first <= a.last and a.base < b.base + b.words and b.base < a.base + a.words


def test_plan_of_a_mini_resnet_fuses_the_adds_and_the_gap_into_the_steps():
    graph, weights = mini_resnet(np.random.default_rng(1))
    plan = plan_graph(graph, weights, pe=4)
    assert [(s.name, s.kind, s.nodes) for s in plan.steps] == [
        ("stem", "conv", ("stem",)), ("b1c1", "conv", ("b1c1",)), ("b1", "conv", ("b1c2", "b1")),
        ("b2c1", "conv", ("b2c1",)), ("b2sc", "conv", ("b2sc",)), ("b2", "conv", ("b2c2", "b2", "gap")),
        ("gap", "pointwise", ("gap",)), ("fc", "conv", ("fc",))]
    steps = {s.name: s for s in plan.steps}
    # the fused add reads its skip (the block input, or the 1x1 shortcut's raw accumulator) where it writes
    assert steps["b1"].skip == "stem" and steps["b2"].skip == "b2sc" and steps["b1"].src == "b1c1"
    # b2 is read only by the GAP: never stored; the GAP's raw sums are, then requantized
    assert steps["b2"].dst is None and steps["b2"].gap == "gap.sum" and steps["gap"].src == "gap.sum"
    assert "b2" not in plan.tensors and "flat" not in plan.tensors and steps["fc"].src == "gap"
    # shortcut's raw accumulator stored with the identity requantizer
    assert set(steps["b2sc"].M) == {1} and steps["b2sc"].shift == 0 and steps["b2sc"].lo is None
    # the skip tensor lives until the add that reads it
    assert plan.tensors["stem"].last == steps["b1"].index
    assert plan.tensors["b2sc"].last == steps["b2"].index
    # shapes and sizes
    assert (steps["b2c1"].c_in, steps["b2c1"].h_out, steps["b2c1"].stride, steps["b2c1"].groups) == (4, 4, 2, 2)
    assert (steps["fc"].c_in, steps["fc"].h_in, steps["fc"].groups) == (8, 1, 3)
    assert sum(s.weight_words for s in plan.steps) == sum(len(rom) for rom in plan.weight_roms)
    for s in plan.steps:
        if s.kind == "conv":
            assert s.weight_words == s.groups * s.c_in * s.kernel ** 2
    assert len(plan.constants) == sum(s.c_out for s in plan.steps)


@pytest.mark.parametrize("seed", range(3))
def test_liveness_never_shares_a_word_between_live_tensors(seed):
    rng = np.random.default_rng(seed)
    for graph, weights in (mini_resnet(rng), pointwise_graph(rng), residual_chain(rng, 4)):
        plan = plan_graph(graph, weights, pe=int(rng.integers(1, 5)))
        tensors = list(plan.tensors.values())
        for k, a in enumerate(tensors):
            assert 0 <= a.base and a.base + a.words <= plan.banks[a.bank][1] and a.width <= plan.banks[a.bank][0]
            for b in tensors[k + 1:]:
                assert a.bank != b.bank or not _overlap(a, b), (a.name, b.name)
        for s in plan.steps:  # a step never writes over what it reads
            for w in (s.dst, s.gap):
                for r in (s.src, s.skip):
                    if w and r:
                        assert plan.tensors[w].bank != plan.tensors[r].bank or not _overlap(
                            plan.tensors[w], plan.tensors[r]), (s.name, w, r)
        assert plan.act_bits < plan.memory_map()["activation"]["bits_without_reuse"]


def test_activation_memory_does_not_grow_with_depth():
    """Ping-pong plus the skip: a deeper chain of identity blocks needs no more words."""
    banks = [plan_graph(*residual_chain(np.random.default_rng(0), blocks), pe=4).banks for blocks in (1, 3, 8)]
    # the 8-bit input in its own bank, then three 4-channel 8x8 maps of 3-bit codes
    assert banks[0] == banks[1] == banks[2] == [(4, 3 * 4 * 8 * 8), (8, 64)]


def test_memory_map_is_json_and_complete():
    graph, weights = mini_resnet(np.random.default_rng(1))
    plan = plan_graph(graph, weights, pe=4)
    mm = json.loads(json.dumps(plan.memory_map()))
    # codes in a 4-bit bank; the input, the shortcut's accumulator, GAP sums and logits in a wide one
    assert [(b["word_bits"], b["words"]) for b in mm["activation"]["banks"]] == plan.banks
    assert plan.banks[0][0] == 4 and plan.banks[1][0] == plan.act_width == 15
    assert {t.name for t in plan.tensors.values() if t.bank == 1} == {"x", "b2sc", "gap.sum", "gap", "fc"}
    assert {t["name"] for t in mm["activation"]["tensors"]} == set(plan.tensors)
    roms = [(r["word_bits"], r["words"]) for r in mm["weights"]["roms"]]
    assert roms == [(4 * 8, 9 + 24), (4 * 3, 36 * 2 + 72 + 8 + 144)]  # int8: stem, fc; POST: the rest
    assert mm["weights"]["bits"] == 32 * 33 + 12 * 296
    assert [a["kind"] for a in mm["arrays"]] == ["int", "post"]
    assert mm["descriptors"]["count"] == len(plan.steps) and mm["input"] == "x" and mm["output"] == "fc"


def test_max_pools_run_on_the_max_array_padding_never_chosen():
    rng = np.random.default_rng(0)
    nodes = [inp((3, 7, 7), bits=8, signed=True),
             {"name": "p", "op": "maxpool", "inputs": ["x"], "kernel": 3, "stride": 2, "pad": 1}]
    graph = Graph.from_dict({"nodes": nodes, "output": "p"})
    plan = plan_graph(graph, {}, pe=2)
    assert plan.arrays[0].kind == "max" and plan.steps[0].conv_groups == 3
    images = rng.integers(-128, 0, (2, 3, 7, 7))  # all negative: a padded 0 would win
    got, _ = run_engine(GraphEngine(plan), images)
    assert np.array_equal(got, _expected(graph, {}, images))


def test_grouped_convolutions_and_average_pools_keep_pe_groups_inside_a_convolution_group():
    rng = np.random.default_rng(0)
    grouped = conv("g", "x", 6, 6, 3, 1, req([1] * 6, [0] * 6, 0, 0, 7), 3)
    grouped.update(groups=3)
    grouped["weight"]["shape"] = [6, 2, 3, 3]
    depthwise = conv("d", "g", 6, 6, 3, 2, req([1] * 6, [0] * 6, 0, 0, 7), 3)
    depthwise.update(groups=6)
    depthwise["weight"]["shape"] = [6, 1, 3, 3]
    pool = {"name": "a", "op": "avgpool", "inputs": ["d"], "kernel": 2, "stride": 1, "pad": 1,
            "requant": req([3] * 6, [0] * 6, 2, 0, 7)}
    graph = Graph.from_dict({"nodes": [inp((6, 5, 5), bits=3, signed=False), grouped, depthwise, pool],
                             "output": "a"})
    weights = random_weights(graph, rng)
    plan = plan_graph(graph, weights, pe=4)
    g, d, a = plan.steps
    # 3 groups of 2 output channels: one PE group each (2 of 4 lanes busy), 2 inputs x 9 taps per output
    assert (g.conv_groups, g.pgroups, g.groups, g.items, g.weight_words) == (3, 1, 3, 18, 3 * 18)
    assert (d.conv_groups, d.groups, d.items) == (6, 6, 9) and (a.conv_groups, a.items, a.array) == (6, 4, 1)
    rom = plan.weight_roms[0]
    w = np.asarray(weights["g"])
    assert [rom[k][:2] for k in range(18, 20)] == [[w[2, 0, 0, 0] & 15, w[3, 0, 0, 0] & 15],
                                                    [w[2, 0, 0, 1] & 15, w[3, 0, 0, 1] & 15]]
    assert plan.weight_roms[1] == [[1, 0, 0, 0]] * (6 * 4)  # the pool's window of ones, lane 0 only
    images = rng.integers(0, 8, (2, 6, 5, 5))
    got, _ = run_engine(GraphEngine(plan), images)
    assert np.array_equal(got, _expected(graph, weights, images))


# ----------------------------------------------------------------------------- engine in simulation


@pytest.mark.parametrize("post_frac_bits", [2, 3])
def test_engine_runs_a_mini_resnet_bit_exact(post_frac_bits):
    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng, post_frac_bits=post_frac_bits)
    images = rng.integers(-128, 128, (1, 1, 8, 8))
    engine = GraphEngine(plan_graph(graph, weights, pe=4))
    got, cycles = run_engine(engine, images)
    assert np.array_equal(got, _expected(graph, weights, images))
    assert cycles[0] <= engine.estimate_cycles()


def test_engine_runs_the_pointwise_steps_bit_exact_with_stalls_and_a_pe_not_dividing_the_channels():
    rng = np.random.default_rng(2)
    graph, weights = pointwise_graph(rng)
    images = rng.integers(0, 8, (2, 3, 6, 6))
    engine = GraphEngine(plan_graph(graph, weights, pe=3))
    got, _ = run_engine(engine, images, np.random.default_rng(0))
    want = _expected(graph, weights, images)
    assert np.array_equal(got, want) and not np.array_equal(want[0], want[1])


def test_engine_runs_asq_inputs_bit_exact():
    """Two asq steps (an adapter with a hidden layer, one without), the beta in the requantizer of a
    conv and of a fused add whose skip (a y without beta) is multiplied by 2^G."""
    rng = np.random.default_rng(2)
    graph, weights = asq_block(rng)
    plan = plan_graph(graph, weights, pe=4)
    assert [(s.kind, s.beta) for s in plan.steps] == [
        ("conv", False), ("asq", False), ("conv", True), ("asq", False), ("conv", True), ("pointwise", False),
        ("conv", False)]
    images = rng.integers(0, 8, (2, 2, 6, 6))
    res = run_graph(graph, weights, images)
    assert res["c1.beta"][0] != res["c1.beta"][1] and res["c2.beta"][0] != res["c2.beta"][1]
    got, _ = run_engine(GraphEngine(plan), images)
    assert np.array_equal(got, _expected(graph, weights, images))


@pytest.mark.slow
@pytest.mark.parametrize("seed, pe", [(3, 4), (4, 3)])
def test_engine_asq_blocks_bit_exact_with_stalls(seed, pe):
    rng = np.random.default_rng(seed)
    graph, weights = asq_block(rng)
    images = rng.integers(0, 8, (3, 2, 6, 6))
    got, _ = run_engine(GraphEngine(plan_graph(graph, weights, pe=pe)), images, np.random.default_rng(seed))
    assert np.array_equal(got, _expected(graph, weights, images))


def test_a_beta_on_the_skip_branch_is_stored_times_the_beta():
    """main: c1's y (no beta); skip: c2's accumulator (a beta): stored as acc * beta, A without 2^G."""
    graph, weights = asq_block_add_inputs(np.random.default_rng(2), lambda names: names[::-1])
    plan = plan_graph(graph, weights, pe=4)
    c2 = next(s for s in plan.steps if s.name == "c2")
    assert c2.beta and c2.M == (1,) * 4 and c2.shift == 0
    add = next(s for s in plan.steps if s.name == "b")
    req = graph.node("b").requant
    assert add.A == tuple(req.A) and add.M == tuple(m << req.G for m in req.M)
    assert plan.tensors["c2"].width > arith.signed_width(graph.info("c2").lo, graph.info("c2").hi)


@pytest.mark.parametrize("kind", ["post", "pot"])
def test_signed_codes_into_power_weights_are_refused_by_name(kind):
    # golden computes them (a linear bottleneck's codes, MobileNet-V2); the engine's lanes take |a| unsigned
    from tests.engine_graphs import conv, inp, req

    graph = Graph.from_dict({"nodes": [inp((2, 4, 4), bits=3), conv("c", "x", 2, 2, 1, 1, req([1, 1], [0, 0], 0, 0, 7),
                                                                   signed=True, kind=kind)], "output": "c"}, 2)
    with pytest.raises(UserError, match=f"engine: node 'c' \\(conv\\): signed input codes into {kind} weights"):
        plan_graph(graph, {"c": np.zeros((2, 2, 1, 1), dtype=np.int64)}, pe=4)


def test_a_beta_accumulator_read_other_than_as_a_skip_is_refused_by_name():
    graph, weights = asq_block_add_inputs(np.random.default_rng(2), lambda names: [names[0], names[0]])
    with pytest.raises(UserError, match="node 'c2'.*raw accumulator carrying a beta"):
        plan_graph(graph, weights, pe=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed, pe, kind", [(3, 4, "post"), (4, 2, "pot"), (5, 1, "int"), (6, 8, "post")])
def test_engine_mini_resnets_bit_exact_with_stalls(seed, pe, kind):
    rng = np.random.default_rng(seed)
    graph, weights = mini_resnet(rng, kind=kind, bits=3 if kind != "int" else 4)
    images = rng.integers(-128, 128, (3, 1, 8, 8))
    got, _ = run_engine(GraphEngine(plan_graph(graph, weights, pe=pe)), images, np.random.default_rng(seed))
    assert np.array_equal(got, _expected(graph, weights, images))


def test_the_requantizer_rounds_half_up_once_on_two_terms():
    rq = TwoTermRequantizer(acc_width=12, skip_width=8, m_width=8, a_width=8, b_width=8, out_width=8, max_shift=4,
                            tag_width=4)
    cases = [  # (acc, M, skip, A, B, S, lo, hi): t = 22, S = 2 -> 6; t = -10 -> -2
        (11, 2, 0, 0, 0, 2, None, None), (-5, 2, 0, 0, 0, 2, None, None), (7, 3, -4, 5, 1, 3, 0, 7),
        (100, 100, 50, 10, 0, 0, -128, 127), (-100, 100, 0, 0, 0, 0, -128, 127)]
    got = []

    async def bench(ctx):
        for k, (acc, M, skip, A, B, S, lo, hi) in enumerate(cases):
            half = (1 << (S - 1)) if S else 0
            ctx.set(rq.i.valid, 1)
            ctx.set(rq.i.payload, {"acc": acc, "skip": skip, "M": M, "A": A, "B": B + half, "tag": k})
            ctx.set(rq.shift, S)
            ctx.set(rq.lo, lo or 0)
            ctx.set(rq.hi, hi or 0)
            ctx.set(rq.has_lo, lo is not None)
            ctx.set(rq.has_hi, hi is not None)
            await ctx.tick()
            ctx.set(rq.i.valid, 0)
            for _ in range(rq.LATENCY - 1):
                await ctx.tick()
            assert ctx.get(rq.o.valid) and ctx.get(rq.o.payload.tag) == k
            got.append(ctx.get(rq.o.payload.value))
            await ctx.tick()

    sim = Simulator(rq)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [int(arith.clamp(arith.rshift_round(acc * M + skip * A + B, S), lo, hi))
            for acc, M, skip, A, B, S, lo, hi in cases]
    assert got == want == [6, -2, got[2], 127, -128]


def test_the_engine_logic_does_not_grow_with_the_number_of_layers():
    """The same cells (kinds and counts) for 1 and 6 residual blocks: only ROM depths change."""
    import re
    from collections import Counter

    from amaranth.back import rtlil

    from hw.eda.verilog import top_ports

    def cells(blocks):
        engine = GraphEngine(plan_graph(*residual_chain(np.random.default_rng(0), blocks), pe=4))
        text = rtlil.convert(engine, name="engine", emit_src=False, ports=top_ports(engine))
        return Counter(re.findall(r"^\s*cell (\S+)", text, re.M)), engine.plan

    (one, plan_one), (six, plan_six) = cells(1), cells(6)
    assert one == six and one["$memwr_v2"] == len(plan_one.banks)  # one write port per activation bank
    assert (len(plan_one.steps), len(plan_six.steps)) == (1 + 2 * 1, 1 + 2 * 6)  # stem, then c1 and c2 + add


def _random_case(seed):
    rng = np.random.default_rng(seed)
    graph, weights, images = random_graph(rng)
    return graph, weights, images[:2], plan_graph(graph, weights, pe=int(rng.integers(1, 6))), rng


@pytest.mark.parametrize("seed", [3, 4, 11, 18])  # ASQ; grouped + shortcut; average pool + GAP; max pool
def test_engine_on_random_graphs_bit_exact(seed):
    graph, weights, images, plan, rng = _random_case(seed)
    got, _ = run_engine(GraphEngine(plan), images, rng)
    assert np.array_equal(got, _expected(graph, weights, images))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30))
def test_engine_on_many_random_graphs_bit_exact(seed):
    """Kernels 1/3/5, strides, paddings, every weight kind, grouped and depthwise convolutions,
    identity and 1x1 shortcuts, ASQ units, average and max pools, GAP and flatten heads, PE 1..5, random
    stalls."""
    graph, weights, images, plan, rng = _random_case(seed)
    got, _ = run_engine(GraphEngine(plan), images, rng)
    assert np.array_equal(got, _expected(graph, weights, images))


# ----------------------------------------------------------------------------- the loaded weight store


def test_weight_space_takes_the_lanes_of_the_array_with_most_weight_bits():
    from hw.rtl.engine.planner import weight_checksum, weight_space, weight_words

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    plan = plan_graph(graph, weights, pe=4)
    assert [(a.kind, a.w_bits) for a in plan.arrays] == [("int", 8), ("post", 3)]
    space = weight_space(plan)
    # 3-bit POST codes at PE 4 (12 bits) hold the most weight bits: one 16-bit lane; the int
    # stem's 32-bit words keep their ROM
    assert (space.lanes, space.bases, space.depth) == (1, (None, 0), len(plan.weight_roms[1]))
    assert not space.stored(0) and space.stored(1)
    words = weight_words(plan)
    assert len(words) == space.load_words == space.depth
    for word, codes in zip(words, plan.weight_roms[1], strict=True):
        assert word == sum(c << (3 * p) for p, c in enumerate(codes))
        assert [(word >> (3 * p)) & 7 for p in range(4)] == codes
    assert weight_checksum(words) == sum(words) % 65536


def test_weight_words_split_a_wide_word_into_lanes_low_first():
    from hw.rtl.engine.planner import weight_space, weight_words

    rng = np.random.default_rng(11)
    graph, weights, _ = random_graph(rng)
    plan = plan_graph(graph, weights, pe=3)
    space = weight_space(plan)
    # two int arrays (8 and 2 bits) share the 24-bit words of two lanes; the second follows the first
    assert [(a.kind, a.w_bits) for a in plan.arrays] == [("int", 8), ("int", 2)]
    assert space.lanes == 2 and space.bases == (0, len(plan.weight_roms[0]))
    words = weight_words(plan)
    assert len(words) == 2 * space.depth and all(0 <= w < 65536 for w in words)
    for a, (spec, rom) in enumerate(zip(plan.arrays, plan.weight_roms, strict=True)):
        for n, codes in enumerate(rom):
            at = 2 * (space.bases[a] + n)
            packed = words[at] | words[at + 1] << 16
            assert packed == sum((c & ((1 << spec.w_bits) - 1)) << (spec.w_bits * p) for p, c in enumerate(codes))


def test_a_loaded_engine_adds_the_loader_and_keeps_the_rom_design_unchanged():
    from hw.eda.verilog import verilog_text
    from hw.rtl.engine.core import WEIGHT_STORES

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    rom = GraphEngine(plan_graph(graph, weights, pe=4))
    ram = GraphEngine(plan_graph(graph, weights, pe=4), weight_store="ram")
    spram = GraphEngine(plan_graph(graph, weights, pe=4), weight_store="spram")
    assert WEIGHT_STORES == ("rom", "ram", "spram") and not rom.loaded and ram.loaded
    # an 8-bit input: a beat is a byte either way; the loaded store's base is in the descriptors
    assert rom.beat_width == ram.beat_width == 8
    post_step = next(s for s in plan_graph(graph, weights, pe=4).steps if s.kind == "conv" and s.array == 1)
    assert [d["weight_base"] for d in ram.descriptors()][post_step.index] == post_step.weight_base
    text = verilog_text(spram, name="graph_engine")
    assert text.count("SB_SPRAM256KA") == 1 and "SB_SPRAM256KA" not in verilog_text(ram, name="graph_engine")
    with pytest.raises(ValueError, match="weight store 'flash'"):
        GraphEngine(plan_graph(graph, weights, pe=4), weight_store="flash")


def test_the_host_loads_the_weights_over_the_simulated_link_then_images_run_bit_exact():
    from hw.link.host import SimulatedBoard
    from hw.link.weights import LOAD_BAD, bundle_weight_words, image_command, load_bytes, send_weights
    from hw.rtl.engine.planner import weight_checksum, weight_words
    from hw.rtl.uart import MIN_DIVISOR, StreamLink

    rng = np.random.default_rng(1)
    graph, weights = mini_resnet(rng)
    engine = GraphEngine(plan_graph(graph, weights, pe=4), weight_store="ram")
    images = rng.integers(-128, 128, (1, 1, 8, 8))
    board = SimulatedBoard(StreamLink(engine, MIN_DIVISOR), max_cycles=200_000)
    words = weight_words(engine.plan)
    out_bytes = -(-(engine.word_width + 1) // 8)
    # a load whose checksum is wrong is acknowledged 0: the host says so in one line
    board.write(load_bytes(words, 1, checksum=weight_checksum(words) ^ 1))
    assert int.from_bytes(board.read(out_bytes), "little") == LOAD_BAD | 1 << engine.word_width
    send_weights(board, words, beat_bytes=1, value_bits=engine.word_width)
    board.write(image_command(1) + bytes(int(c) & 0xFF for c in images[0].ravel()))
    expected = _expected(graph, weights, images)[0]
    got = []
    for _ in range(len(expected)):
        beat = int.from_bytes(board.read(out_bytes), "little")
        value = beat & ((1 << engine.word_width) - 1)
        got.append(value - ((value >> (engine.word_width - 1)) << engine.word_width))
    assert got == list(expected)
    # the design's expectation is checked against the bundle before anything is sent
    bundle = type("B", (), {"graph": graph, "weights": weights})
    expected_block = {"words16": len(words), "checksum": weight_checksum(words)}
    assert bundle_weight_words(bundle, expected_block, 4) == words
    with pytest.raises(UserError, match="the bitstream was built from another bundle or PE"):
        bundle_weight_words(bundle, expected_block, 2)
