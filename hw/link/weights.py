"""The engine's weight loader protocol, host side: the bytes that fill a run-time-loaded weight store.

An engine built with its weights in a RAM (:class:`hw.rtl.engine.core.GraphEngine`,
``weight_store="ram"`` or ``"spram"``: on the iCEBreaker the UP5K's SPRAM, which the bitstream
cannot set) takes commands on its input stream, one *beat* each (the link's
``ceil(in_width / 8)`` bytes, little-endian; the command in the low byte, zeros above):

- ``0x57`` (``'W'``) loads the weights: the :func:`hw.rtl.engine.planner.weight_words` of the
  design's plan follow, then their checksum (:func:`hw.rtl.engine.planner.weight_checksum`, the
  sum modulo 2^16). A 16-bit word takes two beats (low byte first) when a beat is one byte, else
  one beat (the word in its low 16 bits). The engine answers one output beat with ``last`` set:
  value 1 when the checksum matched (the weights are loaded), 0 when it did not (no weights are
  loaded; load again).
- ``0x49`` (``'I'``) sends an image: its input codes follow, one beat each, as without the loader;
  the output values come back as usual. Before a load whose checksum matched, the image's codes
  are taken and dropped, and nothing comes back.
- Any other command byte is dropped.

The weights stay until the next load or the board is reconfigured; a load may come at any time
between images.
"""

from asqhw.errors import UserError
from hw.rtl.engine.core import IMAGE_COMMAND, LOAD_WEIGHTS_COMMAND
from hw.rtl.engine.planner import weight_checksum

#: The acknowledgement's values: the checksum matched, or not.
LOAD_OK, LOAD_BAD = 1, 0


def command_beat(command: int, beat_bytes: int) -> bytes:
    """One command beat: the command in the low byte, zeros above."""
    return bytes([command]) + bytes(beat_bytes - 1)


def word_beats(word: int, beat_bytes: int) -> bytes:
    """A 16-bit word as beats: two one-byte beats (low first) or one wider beat."""
    return int(word & 0xFFFF).to_bytes(2, "little") + bytes(max(beat_bytes - 2, 0))


def load_bytes(words, beat_bytes: int, *, checksum: int | None = None) -> bytes:
    """The bytes of a weight load: the command, ``words``, their checksum (``checksum`` overrides it)."""
    total = weight_checksum(words) if checksum is None else checksum
    return (command_beat(LOAD_WEIGHTS_COMMAND, beat_bytes) + b"".join(word_beats(w, beat_bytes) for w in words)
            + word_beats(total, beat_bytes))


def image_command(beat_bytes: int) -> bytes:
    """The command beat that goes before each image's codes."""
    return command_beat(IMAGE_COMMAND, beat_bytes)


def check_ack(value: int) -> None:
    """UserError unless ``value`` (the acknowledgement beat) says the weights were loaded."""
    if value != LOAD_OK:
        raise UserError(f"the board answered the weight load with {value}, not {LOAD_OK}: its checksum did not "
                        "match the weights sent (a line error, or a design built from another bundle or PE); "
                        "no weights are loaded")
