"""The descriptor-driven graph engine: a format-2 graph run by one engine looping over descriptors.

- :mod:`hw.rtl.engine.planner`: graph -> steps (descriptors), tensors placed by liveness in one
  activation memory, the weight ROM and the constant table, and the memory map (:func:`plan_graph`);
- :mod:`hw.rtl.engine.core`: the engine (:class:`GraphEngine`) built from a plan.
"""
