"""The golden integer model: the specification of the hardware's arithmetic (docs/arithmetic.md).

``golden.arith``: the primitives; ``golden.model``: inference of a bundle; ``golden.bundle``: the
bundle format; ``golden.export``: checkpoint -> bundle; ``golden.evaluate``: golden vs float.
"""
