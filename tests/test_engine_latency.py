"""The engine's cycle estimate follows its arrays' latencies: the registered DSP products of the uniform
MAC array (:meth:`hw.rtl.mac.MacArray.latency_for`) cost what ``GraphEngine.estimate_cycles`` says."""

import numpy as np

import hw.rtl.engine.core as core
from golden.graph import run_graph
from hw.rtl.engine.core import GraphEngine
from hw.rtl.engine.planner import plan_graph
from hw.rtl.mac import MacArray
from tests.engine_graphs import mini_resnet
from tests.test_hw_engine import run_engine


class _CombinationalMacArray(MacArray):
    """The engine's MAC array as it was before its uniform products were registered (latency 2)."""

    def __init__(self, *args, registered_dsp=False, **kwargs):
        super().__init__(*args, **kwargs)

    @classmethod
    def latency_for(cls, kind, *, registered_dsp=False, **options):
        return MacArray.latency_for(kind, **options)


def test_the_estimate_counts_the_uniform_arrays_registered_products(monkeypatch):
    """Without stalls, registering the int8 array's products adds to an image exactly what the
    estimate adds: 4 cycles for each output pixel of a step on that array (and the rest of the
    estimate's margin is unchanged); both runs equal golden."""
    rng = np.random.default_rng(5)
    graph, weights = mini_resnet(rng, kind="int", bits=4, size=6)
    images = rng.integers(-128, 128, (1, 1, 6, 6))
    want = run_graph(graph, weights, images)[graph.output].reshape(1, -1)
    plan = plan_graph(graph, weights, pe=2)
    assert any(plan.arrays[s.array].kind == "int" for s in plan.steps if s.kind == "conv")

    registered = GraphEngine(plan)
    estimate = registered.estimate_cycles()
    got, cycles = run_engine(registered, images)
    assert np.array_equal(got, want)
    monkeypatch.setattr(core, "MacArray", _CombinationalMacArray)
    combinational = GraphEngine(plan)
    got_before, cycles_before = run_engine(combinational, images)
    assert np.array_equal(got_before, want)

    int_pixels = sum(s.groups * s.h_out * s.w_out for s in plan.steps
                     if s.kind == "conv" and plan.arrays[s.array].kind == "int")
    added = MacArray.latency_for("int", registered_dsp=True) - MacArray.LATENCY
    assert added == 4
    assert cycles[0] - cycles_before[0] == added * int_pixels
    assert estimate - combinational.estimate_cycles() == added * int_pixels
    assert cycles[0] <= estimate
