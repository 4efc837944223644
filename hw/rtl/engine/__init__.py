"""The descriptor-driven graph engine: a format-2 graph run by one engine looping over descriptors.

- :mod:`hw.rtl.engine.planner`: graph -> steps (descriptors), tensors placed by liveness in the
  activation banks, the weight ROMs and the constant table, and the memory map (:func:`plan_graph`,
  :meth:`EnginePlan.memory_map`);
- :mod:`hw.rtl.engine.core`: the engine (:class:`GraphEngine`) built from a plan;
- :mod:`hw.rtl.engine.epilogue`: its requantizer (two terms for the residual add, the ASQ beta);
- :mod:`hw.rtl.engine.maxarray`: the running max of max pools.
"""
