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


# ----------------------------------------------------------------------------------------------
# Loading a board


def design_weights(report: dict) -> dict | None:
    """What a ``report.json`` of ``asqhw synth`` says its design loads (its ``engine.weights`` block,
    :func:`hw.eda.synth.engine_weights_block`), or None for weights in ROMs (nothing to load)."""
    block = (report.get("engine") or {}).get("weights") or {"store": "rom"}
    return None if block["store"] == "rom" else block


def bundle_weight_words(bundle, expected: dict, pe: int) -> list:
    """The 16-bit words of ``bundle``'s weights for an engine at ``pe``; UserError, in one line, when
    they are not the ones the design expects (``expected``: :func:`design_weights`)."""
    from hw.rtl.engine.planner import plan_graph, weight_words

    words = weight_words(plan_graph(bundle.graph, bundle.weights, pe=pe))
    got = (len(words), weight_checksum(words))
    want = (expected["words16"], expected["checksum"])
    if got != want:
        raise UserError(f"the bundle's weights at PE {pe} are {got[0]} words with checksum {got[1]}, the design "
                        f"expects {want[0]} words with checksum {want[1]}: the bitstream was built from another "
                        "bundle or PE (pass the --model it was built from, or rebuild it with `asqhw synth`)")
    return words


def send_weights(port, words, *, beat_bytes: int, value_bits: int) -> None:
    """Load ``words`` into the board on ``port`` (``write(bytes)``/``read(n)``) and check its
    acknowledgement (one output beat: ``value_bits`` signed bits then ``last``); UserError when the
    board answers nothing or anything but a loaded store."""
    port.write(load_bytes(words, beat_bytes))
    out_bytes = -(-(value_bits + 1) // 8)
    raw = port.read(out_bytes)
    if len(raw) < out_bytes:
        raise UserError(f"the board answered {len(raw)} of the {out_bytes} bytes acknowledging the weight load "
                        "before the timeout; check the port, the baud rate, and that the bitstream loads its "
                        "weights (report.json engine.weights)")
    beat = int.from_bytes(raw, "little")
    value = beat & ((1 << value_bits) - 1)
    value -= (value >> (value_bits - 1)) << value_bits
    if not beat >> value_bits & 1:
        raise UserError(f"the board answered the weight load with a beat without 'last' ({raw.hex()}): it does not "
                        "speak the loader protocol")
    check_ack(value)


def prepare_board(port, bundle_path, report_path) -> bytes:
    """Before the first image: load ``bundle_path``'s weights into the board on ``port`` when the
    design of ``report_path`` (its ``asqhw synth`` report.json) loads them; returns the bytes that go
    before each image (the image command, or nothing for weights in ROMs)."""
    import json
    from pathlib import Path

    from golden.bundle import read_bundle

    try:
        report = json.loads(Path(report_path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--synth-report {report_path}: not a readable report.json ({err})") from None
    expected = design_weights(report)
    if expected is None:
        return b""
    bundle = read_bundle(bundle_path, vectors=False)
    if not hasattr(bundle, "graph"):
        raise UserError(f"--synth-report {report_path}: its design loads the weights of a graph bundle; {bundle_path} "
                        "is not one")
    words = bundle_weight_words(bundle, expected, report["design"]["pe"])
    send_weights(port, words, beat_bytes=expected["beat_bytes"], value_bits=expected["ack_value_bits"])
    return image_command(expected["beat_bytes"])
