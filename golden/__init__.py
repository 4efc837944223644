"""The golden integer model: the specification of the hardware's arithmetic (docs/arithmetic.md).

NumPy only (importing it never imports torch): ``golden.formats``: the widths, weight kinds and
output beat every stage agrees on; ``golden.arith``: the integer primitives; ``golden.bundle``: the
bundle format as typed records; ``golden.model``: inference of a bundle. The exporter that writes
bundles from checkpoints is ``quant.export``.
"""
