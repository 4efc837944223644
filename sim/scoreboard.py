"""In-order checker: compares what a monitor saw with what the reference model predicted.

The driver's transactions go to the reference model (:mod:`sim.reference`), which pushes the
expected result of each into :meth:`InOrderChecker.expect`; the monitor pushes what the design
produced into :meth:`InOrderChecker.observe`. Results must come back in the order the inputs went
in; each observed transaction is compared element by element with the oldest expected one, and a
difference is recorded as a :class:`Mismatch` naming the image, layer, element index, expected and
got. :meth:`InOrderChecker.finish` raises ``AssertionError`` listing the first mismatches (and any
missing or extra transaction), so a failing cocotb test prints exactly where the RTL went wrong.
"""

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Mismatch:
    """One element where the design and the reference model disagree."""

    image: int
    layer: str
    index: int
    expected: int
    got: int

    def __str__(self) -> str:
        return (f"image {self.image} layer {self.layer} index {self.index}: "
                f"expected {self.expected} got {self.got}")


class InOrderChecker:
    """Scoreboard for a stream whose outputs come back in input order.

    Parameters
    ----------
    name : str
        What is checked (shown in messages).
    max_report : int
        How many mismatches :meth:`finish` lists (all are counted).
    """

    def __init__(self, name: str, max_report: int = 10):
        self.name, self.max_report = name, max_report
        self.pending = deque()  # (image, layer, expected values)
        self.mismatches: list[Mismatch] = []
        self.extra = 0
        self.matched = 0  # transactions compared (equal or not)
        self.elements = 0

    def expect(self, image: int, layer: str, values) -> None:
        """Queue the reference model's result for the next transaction of ``image``/``layer``."""
        self.pending.append((int(image), str(layer), [int(v) for v in values]))

    def observe(self, values) -> list[Mismatch]:
        """Compare the design's next transaction with the oldest expected one; return its mismatches."""
        values = [int(v) for v in values]
        if not self.pending:
            self.extra += 1
            return []
        image, layer, expected = self.pending.popleft()
        common = zip(expected, values, strict=False)  # a length difference is reported below
        found = [Mismatch(image, layer, i, e, g) for i, (e, g) in enumerate(common) if e != g]
        if len(values) != len(expected):
            found.append(Mismatch(image, layer, min(len(values), len(expected)),
                                  len(expected), len(values)))  # length itself differs
        self.mismatches += found
        self.matched += 1
        self.elements += len(expected)
        return found

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.pending and not self.extra

    def report(self) -> str:
        """Human-readable summary: counts, then the first mismatches."""
        lines = [f"{self.name}: {self.matched} transactions ({self.elements} values) compared, "
                 f"{len(self.mismatches)} mismatches, {len(self.pending)} missing, {self.extra} extra"]
        lines += [f"  {m}" for m in self.mismatches[: self.max_report]]
        if len(self.mismatches) > self.max_report:
            lines.append(f"  ... and {len(self.mismatches) - self.max_report} more")
        if self.pending:
            image, layer, _ = self.pending[0]
            lines.append(f"  first missing: image {image} layer {layer}")
        return "\n".join(lines)

    def finish(self) -> None:
        """Raise ``AssertionError`` with :meth:`report` unless every result matched and none is missing."""
        if not self.ok:
            raise AssertionError(self.report())
