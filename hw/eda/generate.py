"""Python entry points: build the accelerator, write its Verilog, write unit Verilog.

- :func:`build_top` -> the :class:`hw.rtl.accel.AsqAccel` Elaboratable of a bundle.
- :func:`generate_verilog` -> ``asq_accel.v`` + a copy of the manifest with the generator
  parameters and the cycles per inference, written atomically into ``out_dir``.
- :func:`unit_verilog` -> one unit (``mul_lane``, ``mac_array``, ``requant``, ``asq_unit``) as
  standalone Verilog, for unit testbenches.
- :func:`uses_engine` -> which hardware runs a bundle: the descriptor-driven graph engine
  (:func:`generate_engine_verilog`) for a graph that is not a chain, else the chain accelerator
  above (format-1 bundles and chain-shaped graphs such as the digits bundles, read as chains by
  :func:`golden.model.load_bundle`).
"""

import json
from pathlib import Path

from asqhw.atomic import atomic_dir
from asqhw.errors import UserError
from golden.bundle import Bundle
from golden.formats import OUT_LAST_BIT, OUT_WIDTH
from hw.eda.verilog import write_verilog
from hw.rtl.accel import AsqAccel
from hw.rtl.plan import DEFAULT_PE, DEFAULT_SIMD, check_acc_width, make_plan

TOP_NAME = "asq_accel"


def _load(bundle_or_path) -> Bundle:
    if isinstance(bundle_or_path, Bundle):
        return bundle_or_path
    from golden.model import load_bundle

    return load_bundle(bundle_or_path, vectors=False)


def build_top(bundle, *, pe=DEFAULT_PE, simd=DEFAULT_SIMD, mul=None, bits=None) -> AsqAccel:
    """The accelerator of ``bundle`` (a :class:`golden.bundle.Bundle` or a bundle folder)."""
    bundle = _load(bundle)
    plan = make_plan(bundle, bits=bits, pe=pe, simd=simd, mul=mul)
    for layer in plan.layers:
        check_acc_width(layer, plan.frac_bits)
    return AsqAccel(plan)


def generate_verilog(bundle, *, pe=DEFAULT_PE, simd=DEFAULT_SIMD, mul=None, bits=None, out_dir,
                     check=None) -> dict:
    """Write ``asq_accel.v`` and ``manifest.json`` (the chain's manifest, format 1, + ``generator`` section).

    Everything is checked before anything is written; ``out_dir`` appears complete or not at all.
    ``check`` (``asqhw verilog`` passes its Verilator lint) is called with the
    Verilog file before the folder is moved into place: when it raises, ``out_dir`` is left as it was.

    Returns
    -------
    dict
        ``paths`` (``verilog``, ``manifest``), ``params`` (bits, mul, pe, simd, top),
        ``cycles_per_inference``.
    """
    source_format = _manifest(bundle).format_version
    bundle = _load(bundle)
    top = build_top(bundle, pe=pe, simd=simd, mul=mul, bits=bits)
    plan = top.plan
    cycles = top.cycles_per_inference()
    params = {"top": TOP_NAME, "bits": plan.bits, "mul": plan.mul, "pe": plan.pe, "simd": plan.simd,
              "post_frac_bits": plan.frac_bits}
    manifest = bundle.manifest.to_dict()
    manifest["generator"] = {
        **params, "cycles_per_inference": cycles,
        "source_bundle": str(bundle.path) if bundle.path else None,
        # the manifest above is the chain (format 1) the accelerator implements: a chain-shaped graph's
        # chain view when the source bundle is format 2
        "source_format_version": source_format,
        "engines": {la.name: la.engine for la in plan.layers},
        "ports": port_summary(top),
    }
    return {"paths": _write_design(top, TOP_NAME, manifest, out_dir, check), "params": params,
            "cycles_per_inference": cycles}


def _write_design(top, name: str, manifest: dict, out_dir, check) -> dict:
    """``<name>.v`` and ``manifest.json`` written into ``out_dir`` at once (an atomic folder swap); the
    Verilog passes ``check`` (e.g. a lint) before anything is replaced. Returns the two paths."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        verilog = write_verilog(top, tmp / f"{name}.v", name=name)
        if check is not None:
            check(verilog)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {"verilog": out_dir / f"{name}.v", "manifest": out_dir / "manifest.json"}


def port_summary(top: AsqAccel) -> dict:
    """Verilog port widths of the top (documented in docs/hardware.md)."""
    return {"i__payload": top.i.payload.shape().width, "o__payload": top.o.payload.shape().size,
            "cycles": 32, "o__payload.value": [0, OUT_WIDTH], "o__payload.last": OUT_LAST_BIT}


UNITS = ("mul_lane", "mac_array", "wide_array", "requant", "asq_unit")


def unit_verilog(name: str, out_dir, *, bundle=None, pe=DEFAULT_PE, simd=DEFAULT_SIMD, mul=None,
                 **params) -> Path:
    """Write one unit as standalone Verilog ``<out_dir>/<name>.v`` (top module ``name``).

    With ``bundle``: the very unit instance inside ``build_top(bundle, pe=, simd=, mul=)``
    (``mac_array`` = the main engine, ``wide_array`` = the 8-bit engine, ``requant``,
    ``asq_unit``), constants included. Without: a fresh unit from ``params``:
    ``mul_lane``: MulLane(kind, w_bits, act_bits, act_signed, pe, frac_bits);
    ``mac_array``: MacArray(kind, w_bits, act_bits, act_signed, pe=, simd=, acc_width=, frac_bits=);
    ``requant``: Requantizer(specs, acc_width, channels, tag_width);
    ``asq_unit``: AsqUnit(configs, tag_width).
    """
    from hw.rtl.asq import AsqUnit
    from hw.rtl.mac import MacArray
    from hw.rtl.mul import MulLane
    from hw.rtl.requant import Requantizer

    if name not in UNITS:
        raise UserError(f"unit {name!r} unknown; use one of {', '.join(UNITS)}")
    if bundle is not None:
        top = build_top(bundle, pe=pe, simd=simd, mul=mul)
        unit = {"mac_array": top.main, "wide_array": top.wide, "requant": top.requant,
                "asq_unit": top.asq}.get(name)
        if unit is None:
            raise UserError(f"unit {name!r} does not exist in the accelerator of this bundle")
    else:
        makers = {"mul_lane": MulLane, "mac_array": MacArray, "wide_array": MacArray,
                  "requant": Requantizer, "asq_unit": AsqUnit}
        try:
            unit = makers[name](**params)
        except (TypeError, ValueError) as err:
            raise UserError(f"unit {name}: {err}") from None
    return write_verilog(unit, Path(out_dir) / f"{name}.v", name=name)


# ----------------------------------------------------------------------------- graph bundles (format 2)

#: Top module and file name of the descriptor-driven engine a graph bundle generates.
ENGINE_TOP_NAME = "graph_engine"


def is_graph_bundle(bundle_or_path) -> bool:
    """Whether ``bundle_or_path`` (a bundle in memory or a bundle folder) is a format-2 graph bundle."""
    from golden.bundle import GRAPH_FORMAT_VERSION

    return _manifest(bundle_or_path).format_version == GRAPH_FORMAT_VERSION


def uses_engine(bundle_or_path) -> bool:
    """Whether ``bundle_or_path`` (a bundle in memory or a bundle folder) runs on the graph engine
    rather than on the chain accelerator.

    True for a graph (format-2) bundle that is not chain-shaped (ResNet-20, ...). False for a
    format-1 bundle and for a chain-shaped graph (the digits networks), which the chain accelerator
    runs through its format-1 view (:func:`golden.graph.chain_bundle`, what
    :func:`golden.model.load_bundle` returns): smaller and faster for them than the engine.
    """
    from golden.graph import is_chain

    return is_graph_bundle(bundle_or_path) and not is_chain(_manifest(bundle_or_path).graph)


def _manifest(bundle_or_path):
    """The manifest of a bundle in memory, or the validated manifest of a bundle folder."""
    from golden.bundle import read_manifest

    manifest = getattr(bundle_or_path, "manifest", None)
    return read_manifest(bundle_or_path) if manifest is None else manifest


def build_engine(bundle, *, pe=DEFAULT_PE, weight_store="rom"):
    """The :class:`hw.rtl.engine.core.GraphEngine` of a graph bundle (a ``GraphBundle`` or its folder),
    its weights in ``weight_store`` (:data:`hw.rtl.engine.core.WEIGHT_STORES`).

    A graph the engine does not run is refused with one line (:class:`UserError` naming the node).
    """
    from golden.bundle import read_bundle
    from hw.rtl.engine.core import GraphEngine
    from hw.rtl.engine.planner import plan_graph

    if not hasattr(bundle, "graph"):
        bundle = read_bundle(bundle, vectors=False)
    plan = plan_graph(bundle.graph, bundle.weights, pe=pe)
    try:
        return GraphEngine(plan, weight_store=weight_store)
    except (TypeError, ValueError) as err:
        raise UserError(f"engine: {err}") from None


def engine_figures(engine) -> dict:
    """Cycles of one image (the engine's schedule, without stalls) against the MAC bound at its PE.

    ``macs``: multiply-accumulates of one image (every conv, fc and average-pool step: output
    values times inputs summed each); ``mac_bound_cycles``: ``macs / PE`` rounded up, the cycles of
    an array doing PE MACs in every cycle; ``cycles_per_inference``: the engine's estimate
    (:meth:`GraphEngine.estimate_cycles`); ``mac_efficiency``: bound / cycles.
    """
    plan = engine.plan
    macs = sum(s.c_out * s.h_out * s.w_out * s.items for s in plan.steps
               if s.kind == "conv" and plan.arrays[s.array].kind != "max")
    cycles = engine.estimate_cycles()
    bound = -(-macs // plan.pe)
    return {"cycles_per_inference": cycles, "macs": macs, "mac_bound_cycles": bound,
            "mac_efficiency": round(bound / cycles, 4) if cycles else None}


def estimate_engine(bundle, *, pe=DEFAULT_PE) -> dict:
    """:func:`engine_figures` of a graph bundle's engine at ``pe``, without generating its Verilog."""
    engine = build_engine(bundle, pe=pe)
    # Built for its schedule only: never elaborated, which Amaranth would otherwise warn about.
    for unit in (engine, engine.asq_unit):
        if unit is not None:
            unit._MustUse__silence = True
    return engine_figures(engine)


def memory_summary(memory_map: dict) -> str:
    """One line of an engine's memory map: activation banks and bits (and without reuse), weight
    and constant tables, descriptors."""
    act, w = memory_map["activation"], memory_map["weights"]
    banks = " + ".join(f"{b['words']} x {b['word_bits']}" for b in act["banks"])
    roms = " + ".join(f"{r['words']} x {r['word_bits']}" for r in w["roms"])
    return (f"activations {banks} bits = {act['bits']} bits ({act['bits_without_reuse']} without reuse); "
            f"weights {roms} bits = {w['bits']} bits; {memory_map['constants']['entries']} constant entries; "
            f"{memory_map['descriptors']['count']} descriptors")


def generate_engine_verilog(bundle, *, pe=DEFAULT_PE, out_dir, check=None, weight_store="rom") -> dict:
    """Write ``graph_engine.v`` and ``manifest.json`` for a graph (format-2) bundle.

    The manifest is the bundle's plus a ``generator`` section: the parameters, the cycles per image
    against the MAC bound (:func:`engine_figures`), the memory map
    (:meth:`hw.rtl.engine.planner.EnginePlan.memory_map`) and the ports. As :func:`generate_verilog`:
    everything is checked before anything is written, ``out_dir`` appears complete or not at all,
    and ``check`` (the Verilator lint) runs on the Verilog before the folder is moved into place.
    ``weight_store``: where the weights are (:data:`hw.rtl.engine.core.WEIGHT_STORES`); the
    manifest's ``weights`` says what a loaded store takes (:func:`hw.eda.synth.engine_weights_block`).

    Returns
    -------
    dict
        ``paths`` (``verilog``, ``manifest``), ``params`` (bits, pe, simd, top, post_frac_bits),
        ``cycles_per_inference``, ``macs``, ``mac_bound_cycles``, ``mac_efficiency``, ``memory_map``.
    """
    from golden.bundle import read_bundle

    if not hasattr(bundle, "graph"):
        bundle = read_bundle(bundle, vectors=False)
    from hw.eda.synth import engine_weights_block

    engine = build_engine(bundle, pe=pe, weight_store=weight_store)
    plan = engine.plan
    figures = engine_figures(engine)
    memory_map = plan.memory_map()
    params = {"top": ENGINE_TOP_NAME, "bits": bundle.manifest.bits, "pe": plan.pe, "simd": 1,
              "post_frac_bits": plan.post_frac_bits}
    manifest = bundle.manifest.to_dict()
    manifest["generator"] = {
        **params, **figures, "cycles_estimated": True,
        "source_bundle": str(bundle.path) if bundle.path else None,
        "memory_map": memory_map, "weights": engine_weights_block(engine),
        "ports": {"i__payload": engine.beat_width, "o__payload": engine.word_width + 1, "cycles": 32,
                  "o__payload.value": [0, engine.word_width], "o__payload.last": engine.word_width},
    }
    return {"paths": _write_design(engine, ENGINE_TOP_NAME, manifest, out_dir, check), "params": params,
            **figures, "memory_map": memory_map}
