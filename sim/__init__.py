"""Verification of the generated Verilog with cocotb on Icarus and Verilator.

- :mod:`sim.runner`: builds Verilog for a simulator and runs a cocotb module (``run_cocotb``).
- :mod:`sim.tb`: parameters, clock and reset, payload packing shared by the testbenches.
- :mod:`sim.streams`: stream driver and monitor with seeded random valid/ready stalls.
- :mod:`sim.reference`: the reference model (golden's primitives and inference, nothing else).
- :mod:`sim.scoreboard`: the in-order checker (image, layer, index, expected, got).
- :mod:`sim.units`: every hardware unit of one BITS in one design, for the unit testbenches.
- :mod:`sim.accel`: the whole accelerator against its bundle (tests, ``asqhw sim``, benchmark).
- ``sim/test_*.py``: one file per design under test, cocotb coroutines and pytest runners.
"""
