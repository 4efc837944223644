"""`asqhw host` and `asqhw synth --reply` on the graph engine: the engine behind the simulated UART link
answers the logits reply (its output beats, the class taken by the host) and the class-only reply
(its class beat, :class:`hw.rtl.engine.reply.EngineWithClass`), equal to golden."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from asqhw.cli import main
from hw.link.host import EngineBeats
from hw.rtl.engine.reply import EngineWithClass

#: A mini-ResNet whose first test images differ in class: [0, 8, 8, 0].
GRAPH_SEED = 2


@pytest.fixture(scope="module")
def mini_resnet_bundle(tmp_path_factory):
    """A graph bundle the engine runs (a residual block: not a chain), with the digits' input and test
    split, random weights (its accuracy means nothing; its golden vectors are exact)."""
    from golden import arith
    from golden.bundle import SHIPPED_MODELS, read_bundle, write_bundle
    from golden.graph import Graph, GraphBundle, graph_vector_arrays, pixels_to_input, run_graph
    from tests.engine_graphs import mini_resnet

    digits = read_bundle(SHIPPED_MODELS / "digits-b3")
    frac = digits.manifest.post_frac_bits
    graph, weights = mini_resnet(np.random.default_rng(GRAPH_SEED), post_frac_bits=frac)
    nodes = graph.to_dict()
    for node in nodes["nodes"]:
        if "weight" in node:  # what an export records: each node's own file and unit exponent
            w = node["weight"]
            w["unit_exp"] = arith.weight_unit_exponent(w["kind"], w["bits"], frac)
            w["mem"] = f"{node['name']}.mem"
    graph = Graph.from_dict(nodes, frac)
    pixels, labels = digits.vectors["pixels"], digits.vectors["labels"]
    result = run_graph(graph, weights, pixels_to_input(digits.manifest, pixels))
    manifest = dataclasses.replace(digits.manifest, model="mini-resnet", scheme="lsq+post", graph=graph, files=None,
                                   sha256=None)
    vectors = graph_vector_arrays(graph, result, pixels, labels, labels)
    return write_bundle(GraphBundle(manifest=manifest, weights=weights, vectors=vectors),
                        tmp_path_factory.mktemp("graph") / "mini-resnet")


def _host(capsys, bundle, *argv):
    status = main(["host", "--simulate", "--model", str(bundle), "--json", *argv])
    return status, json.loads(capsys.readouterr().out)


def test_host_reads_the_simulated_engines_logits_equal_to_golden(mini_resnet_bundle, capsys):
    from hw.eda.generate import uses_engine

    assert uses_engine(mini_resnet_bundle)
    status, summary = _host(capsys, mini_resnet_bundle, "--count", "2")
    assert status == 0 and summary["images"] == 2
    assert summary["logits_equal_golden"] == 2 and summary["classes_equal_golden"] == 2


def test_host_reads_the_simulated_engines_class_reply_with_images_in_flight(mini_resnet_bundle, capsys):
    golden = np.load(mini_resnet_bundle / "vectors.npz")["pred"][:3]
    assert len(set(golden.tolist())) > 1  # the classes differ: the class byte is not a constant
    status, summary = _host(capsys, mini_resnet_bundle, "--count", "3", "--reply", "class", "--window", "2")
    assert status == 0 and summary["classes_equal_golden"] == 3 and "logits_equal_golden" not in summary
    link = summary["link"]
    assert (link["reply"], link["bytes_in_per_image"], link["bytes_out_per_image"], link["window"]) == (
        "class", 64, 1, 2)


def test_host_refuses_chain_options_against_an_engine_bundle(mini_resnet_bundle, capsys):
    assert main(["host", "--simulate", "--model", str(mini_resnet_bundle), "--mul", "int"]) == 2
    assert "--mul int: a graph bundle" in capsys.readouterr().err


def test_synth_builds_the_engine_with_its_class_beat_for_the_class_reply(mini_resnet_bundle, monkeypatch, tmp_path):
    import hw.eda.synth
    from asqhw.errors import UserError

    seen = {}

    def capture(top, board, out_dir, **kwargs):
        seen.update(kwargs, top=top)
        top._MustUse__silence = top.engine._MustUse__silence = True  # handed over, not built here
        return {}

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", capture)
    hw.eda.synth.synthesize_engine(mini_resnet_bundle, "icebreaker", tmp_path / "o", pe=4, window=3, reply="class",
                                   progress=False)
    assert isinstance(seen["top"], EngineWithClass) and seen["reply"] == "class" and seen["out_beats"] == 1
    options = seen["link_options"]
    assert options["select_width"] == 8 and options["fifo_depth"] == 2 * 64 and "keep" in options

    def stop(*args, **kwargs):  # what the command line hands on
        seen.update(kwargs)
        raise UserError("stopped before synthesis")

    seen.clear()
    monkeypatch.setattr(hw.eda.synth, "synthesize_engine", stop)
    assert main(["synth", "--board", "icebreaker", "--model", str(mini_resnet_bundle), "--reply", "class",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert seen["reply"] == "class"


# ------------------------------------------------------------------------------ the class beat


class _Outputs(wiring.Component):
    """Stands for an engine: output values the testbench drives, the attributes the wrapper reads."""

    def __init__(self, n_out, width):
        self.in_width = 8
        self.plan = SimpleNamespace(output="y", tensors={"y": SimpleNamespace(words=n_out)})
        super().__init__({"i": In(stream.Signature(signed(8))),
                          "o": Out(stream.Signature(data.StructLayout({"value": signed(width), "last": 1}))),
                          "cycles": Out(32)})

    def elaborate(self, platform):
        from amaranth.hdl import Module

        return Module()


@pytest.mark.parametrize("values", [[3, -7, 9, 9, 2], [-5, -5, -9], [-(1 << 20), (1 << 20) - 1, 0, (1 << 20) - 1], [4]])
def test_the_class_beat_is_the_first_largest_value_after_the_values_under_stalls(values):
    engine = _Outputs(len(values), 21)
    top = EngineWithClass(engine)
    rng = np.random.default_rng(len(values))
    got = []

    async def bench(ctx):
        for _ in range(2):  # two images: the wrapper starts again
            sent = 0
            beats = []
            while len(beats) < len(values) + 1:
                if sent < len(values):
                    ctx.set(engine.o.valid, 1)
                    ctx.set(engine.o.payload, {"value": values[sent], "last": sent == len(values) - 1})
                else:
                    ctx.set(engine.o.valid, 0)
                ready = rng.random() < 0.6
                ctx.set(top.o.ready, ready)
                await ctx.delay(1e-7)
                if ready and ctx.get(top.o.valid):
                    beat = ctx.get(top.o.payload)
                    beats.append((beat.value, beat.last))
                    if sent < len(values) and ctx.get(engine.o.ready):
                        sent += 1
                await ctx.tick()
            got.append(beats)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [(v, 0) for v in values] + [(int(np.argmax(values)), 1)]
    assert got == [want, want]


def test_engine_beats_decode_the_engines_output_words():
    beats = EngineBeats(21)
    assert beats.bytes == 3
    assert beats.decode(((1 << 21) - 5).to_bytes(3, "little")) == (-5, False)
    assert beats.decode(((1 << 21) | 7).to_bytes(3, "little")) == (7, True)
    assert beats.decode((1 << 22).to_bytes(3, "little")) is None
