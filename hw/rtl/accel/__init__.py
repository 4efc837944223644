"""``asq_accel``: the whole network of a bundle as one streaming accelerator.

Components (each a :class:`amaranth.lib.wiring.Component`):

- :class:`~hw.rtl.accel.address.AddressGenerator`: the loop nest of the layer being run, one input
  set per cycle, with its activation buffer and weight ROM addresses;
- :class:`~hw.rtl.accel.buffers.ActivationBuffer`: one layer's input codes, SIMD lanes per word;
- :class:`~hw.rtl.accel.serializer.Serializer`: a finished group's PE sums, one per cycle, into the
  requantizer;
- :class:`~hw.rtl.accel.argmax.ArgmaxOutput`: the logits, streamed out, then the predicted class;
- :class:`~hw.rtl.accel.sequencer.Sequencer`: the phases of an inference (load, run, drain, ASQ
  passes, output) and the cycle counter;
- :class:`~hw.rtl.accel.top.AsqAccel`: builds the above for a plan and wires them to the MAC
  engines, the requantizer and the ASQ unit.

:func:`hw.rtl.accel.schedule.schedule` (plain Python) places the phases at generation time, each
as early as the writes it reads allow; the sequencer's phase lengths and the cycle model come
from it.
"""

from hw.rtl.accel.argmax import OUT_WIDTH, output_layout
from hw.rtl.accel.top import AsqAccel

__all__ = ["OUT_WIDTH", "AsqAccel", "output_layout"]
