"""Bad input to the hardware commands (verilog, synth, fit, host, sim): one line, exit 2, nothing lost.

Every case here once ended in a traceback, a silent wrong result or a lost result file. Each must
now end in ``asqhw: error: <what is wrong and the fix>`` on one line of stderr with exit status 2,
before any long work starts and without touching earlier results.
"""

import argparse
import json
import os
import pty
import tempfile
import threading
from pathlib import Path

import pytest

from asqhw.cli import build_parser, main
from golden.bundle import write_bundle
from golden.formats import INT_BITS, range_text
from hw.options import BITS_HELP
from hw.testing import random_bundle

HW_COMMANDS = ("verilog", "synth", "fit", "host", "sim")


def one_line_error(capsys) -> str:
    """The error of the command's stderr, checked to be one ``asqhw: error:`` line, the last, and no
    traceback (a progress bar may come before it)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("asqhw: error: "), err
    assert sum("error" in ln.lower() for ln in lines) == 1 and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can create files in.

    A folder without write permission, unless this process overrides permissions (root): then
    ``/sys``, which even root cannot create files in (sysfs).
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except PermissionError:
        yield folder
    else:
        os.close(fd)
        os.unlink(probe)
        yield Path("/sys")
    finally:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def bundle_b3(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "digits-b3"
    write_bundle(random_bundle(3, "post", scheme_asq=True, seed=5), path)
    return path


# ----------------------------------------------------------------------------- read-only outputs


@pytest.mark.parametrize("argv, what", [
    (["verilog", "--out"], "the Verilog folder"),
    (["synth", "--board", "generic", "--out"], "the synthesis folder"),
    (["fit", "--board", "icebreaker", "--out"], "the fit folder"),
    (["verilog", "--report"], "the --report file"),
    (["host", "--simulate", "--report"], "the --report file"),
])
def test_read_only_output_is_refused_before_any_work(read_only_folder, capsys, argv, what):
    target = read_only_folder / "out"
    assert main([*argv, str(target)]) == 2
    line = one_line_error(capsys)
    assert f"cannot write {what} {target}" in line and f"folder {read_only_folder} is not writable" in line
    assert "Fix: pass --" in line


def test_fit_refuses_an_existing_read_only_fit_folder(read_only_folder, capsys):
    # fit writes inside its folder (fit.json, one folder per candidate), so the folder itself counts
    assert main(["fit", "--board", "icebreaker", "--out", str(read_only_folder)]) == 2
    assert f"folder {read_only_folder} is not writable" in one_line_error(capsys)


def test_export_refuses_a_read_only_bundle_folder_before_loading(read_only_folder, capsys, shipped_checkpoint):
    target = read_only_folder / "bundle"
    assert main(["export", str(shipped_checkpoint(3)), str(target)]) == 2
    line = one_line_error(capsys)
    assert f"cannot write the bundle folder {target}" in line and f"folder {read_only_folder} is not writable" in line


@pytest.mark.parametrize("option", ["--report", "--json"])  # --json FILE: the older spelling
def test_sim_refuses_a_read_only_summary_before_simulating(read_only_folder, capsys, monkeypatch, option):
    import sim.accel

    def no_simulation(*args, **kwargs):
        raise AssertionError("the simulation ran before the output was checked")

    monkeypatch.setattr(sim.accel, "run_accel", no_simulation)
    target = read_only_folder / "summary.json"
    assert main(["sim", "--simulator", "icarus", "--images", "1", option, str(target)]) == 2
    assert f"cannot write the --report file {target}" in one_line_error(capsys)


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("keep me")
    assert main(["verilog", "--out", str(file)]) == 2
    assert "it is a file, not a folder" in one_line_error(capsys)
    assert file.read_text() == "keep me"


def test_a_lint_failure_leaves_no_output_and_keeps_the_old(tmp_path, capsys, monkeypatch):
    import hw.cli
    from asqhw.errors import UserError

    def failing_lint(path):
        assert Path(path).read_text().startswith("/*") or "module asq_accel" in Path(path).read_text()
        raise UserError(f"verilator --lint-only failed on {path}: %Error: stand-in")

    monkeypatch.setattr(hw.cli, "lint", failing_lint)
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    kept.mkdir()
    (kept / "asq_accel.v").write_text("// the earlier output")
    for out in (fresh, kept):
        assert main(["verilog", "--out", str(out)]) == 2
        capsys.readouterr()
    assert not fresh.exists()
    assert (kept / "asq_accel.v").read_text() == "// the earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no temporary folder left either


# ----------------------------------------------------------------------------- bits


@pytest.mark.parametrize("command", ["verilog", "synth --board generic", "fit --board icebreaker",
                                     "host --simulate", "sim --simulator icarus"])
@pytest.mark.parametrize("bits", [1, 9])
def test_bits_outside_the_offered_range_names_the_range(command, bits, capsys):
    assert main([*command.split(), "--bits", str(bits)]) == 2
    line = one_line_error(capsys)
    assert f"{bits} is outside {range_text(INT_BITS)}" in line
    assert "make train" not in line  # `make train BITS=9` fails: never advise it


def test_bits_without_a_shipped_bundle_lists_the_shipped_ones(capsys):
    assert main(["synth", "--board", "generic", "--bits", "5"]) == 2
    line = one_line_error(capsys)
    assert "no bundle for BITS=5" in line and "shipped: BITS 2, 3, 4, 8" in line and "--model" in line


def test_bits_default_to_the_given_bundles(tmp_path, capsys):
    four = tmp_path / "b4"
    write_bundle(random_bundle(4, "post", seed=2), four)
    out = tmp_path / "v"
    assert main(["verilog", "--model", str(four), "--out", str(out), "--no-lint", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["bits"] == 4


# ----------------------------------------------------------------------------- host


def test_host_refuses_a_port_that_is_no_tty(capsys):
    assert main(["host", "--port", "/dev/null", "--count", "1"]) == 2
    line = one_line_error(capsys)
    assert "/dev/null is not a serial port" in line and "--port" in line


@pytest.mark.parametrize("count", ["0", "-3"])
def test_host_refuses_counts_below_one(count, capsys):
    assert main(["host", "--simulate", "--count", count]) == 2
    assert f"--count {count}: send at least 1 image" in one_line_error(capsys)


class Peer:
    """A board on the far side of a pty: reads each image (``image_bytes``), then answers ``reply``."""

    def __init__(self, reply: bytes, image_bytes: int):
        self.master, self.slave = pty.openpty()
        self.path = os.ttyname(self.slave)
        self.reply, self.image_bytes = reply, image_bytes
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        got = 0
        try:
            while True:
                got += len(os.read(self.master, 4096))
                if got >= self.image_bytes:
                    got -= self.image_bytes
                    os.write(self.master, self.reply)
        except OSError:  # the pty closed: the test is over
            pass

    def close(self):
        # The master is closed only once the thread is back in (or out of) its read: closed earlier,
        # its number may go to the next test's pty, which this thread would then answer.
        os.close(self.slave)
        self.thread.join(timeout=1)
        os.close(self.master)


def _beats(values, cls):
    """The accelerator's answer: each logit as a beat with last = 0, then the class with last = 1."""
    return b"".join((v & 0xFFFFFFFF).to_bytes(4, "little") + bytes([0]) for v in values) + \
        (cls & 0xFFFFFFFF).to_bytes(4, "little") + bytes([1])


IMAGE_BYTES = 64  # the digits input: 1 x 8 x 8 codes, one byte each


@pytest.mark.parametrize("reply, message", [
    (b"hello world, I am not an accelerator", "the board sent 68 65 6c 6c 6f as beat 0 of an image; "
                                              "expected 5-byte beats"),
    (_beats([1, 2, 3], 2), "the board answered 3 logits then class 2; expected 10 logits then a class in 0..9"),
    (_beats([0] * 10, 12), "the board answered 10 logits then class 12; expected 10 logits"),
])
def test_host_says_what_a_garbling_peer_sent_and_what_was_expected(reply, message, capsys):
    peer = Peer(reply, IMAGE_BYTES)
    try:
        assert main(["host", "--port", peer.path, "--count", "1"]) == 2
    finally:
        peer.close()
    line = one_line_error(capsys)
    assert message in line and "--baud" in line


def test_host_explains_answers_that_differ_from_golden(capsys, shipped_bundle):
    import numpy as np

    with np.load(shipped_bundle(3) / "vectors.npz") as data:
        golden = data["logits"][0].tolist()
    wrong = [v + 1 for v in golden]
    peer = Peer(_beats(wrong, int(np.argmax(wrong))), IMAGE_BYTES)
    try:
        assert main(["host", "--port", peer.path, "--count", "1"]) == 1
    finally:
        peer.close()
    out = capsys.readouterr().out
    assert "logits equal golden on 0" in out
    assert f"MISMATCH: image 0: the board answered logits {wrong}" in out and f"golden {golden}" in out


# ----------------------------------------------------------------------------- fit


def test_fit_max_zero_is_refused_and_keeps_the_earlier_result(tmp_path, capsys):
    out = tmp_path / "fit"
    out.mkdir()
    earlier = json.dumps({"board": "icebreaker", "best": {"pe": 4, "simd": 4}, "tried": []})
    (out / "fit.json").write_text(earlier)
    for max_par in ("0", "-1"):
        assert main(["fit", "--board", "icebreaker", "--max", max_par, "--out", str(out)]) == 2
        assert f"--max {max_par}: the largest PE and SIMD tried must be at least 1" in one_line_error(capsys)
    assert (out / "fit.json").read_text() == earlier
    assert sorted(p.name for p in out.iterdir()) == ["fit.json"]


def test_a_failed_search_never_replaces_a_result(tmp_path, monkeypatch):
    import dataclasses

    import hw.eda.boards
    from asqhw.errors import UserError
    from hw.eda.fit import find_fit

    earlier = json.dumps({"board": "icebreaker", "best": {"pe": 2, "simd": 2}, "tried": []})
    (tmp_path / "fit.json").write_text(earlier)
    tiny = dataclasses.replace(hw.eda.boards.BOARDS["icebreaker"],
                               capacity={"logic": 50, "lut4": 50, "bram": 1, "dsp": 0})
    monkeypatch.setitem(hw.eda.boards.BOARDS, "icebreaker", tiny)
    with pytest.raises(UserError, match="the earlier result in .*fit.json is kept"):
        find_fit(random_bundle(3), "icebreaker", max_par=2, out_dir=tmp_path)
    assert (tmp_path / "fit.json").read_text() == earlier
    failed = json.loads((tmp_path / "fit-failed.json").read_text())
    assert failed["best"] is None and failed["counts"]["routed"] == 0


def test_fit_reports_each_candidate_with_honest_counts_and_no_raw_tool_errors(bundle_b3, tmp_path,
                                                                              monkeypatch, capfd):
    """Place and route is replaced by a stand-in that fails the first candidate the way nextpnr does
    (its raw error on the inherited stderr) and fits the second."""
    import hw.eda.synth
    from asqhw.errors import UserError

    calls = []

    def fake_synthesize_top(top, board, out_dir, **kwargs):
        calls.append(out_dir.name)
        os.write(2, b"ERROR: Unable to place cell 'lc_42', no BELs remaining\n")
        if len(calls) == 1:
            raise UserError("the design does not work on icebreaker (iCE40UP5K); report: x\n"
                            "  ICESTORM_LC: 6100 used > 5280 available (nextpnr)\n"
                            "  ERROR: Unable to place cell 'lc_42'\n  Fix: a smaller --pe/--simd")
        return {"resources": {"lut4": {"used": 4321}}, "fmax_mhz": {"median": 14.5}}

    monkeypatch.setattr(hw.eda.synth, "synthesize_top", fake_synthesize_top)
    out = tmp_path / "fit"
    assert main(["fit", "--board", "icebreaker", "--model", str(bundle_b3), "--max", "4",
                 "--out", str(out)]) == 0
    captured = capfd.readouterr()
    assert "Unable to place" not in captured.out + captured.err
    assert "Unable to place" in (out / f"{calls[0]}.log").read_text()  # kept in the tool log
    routed = [ln for ln in captured.err.splitlines() if ln.startswith("[")]
    assert len(routed) == 2 and routed[0].startswith("[1/") and routed[1].startswith("[2/")
    assert "does not work: ICESTORM_LC: 6100 used > 5280 available (nextpnr)" in captured.err
    fit = json.loads((out / "fit.json").read_text())
    counts = fit["counts"]
    assert counts["routed"] == 2 and counts["failed"] == 1
    assert len(fit["tried"]) == counts["skipped"] + counts["routed"] <= counts["candidates"]
    assert f"{counts['routed']} placed and routed (1 did not fit or missed the clock, 1 fits)" in captured.out
    assert "4321 LUT4, Fmax 14.5 MHz" in captured.out


@pytest.mark.parametrize("argv, message", [
    (["fit"], "--board is required: one of icebreaker, ulx3s"),
    (["fit", "--board", "generic"], "fit needs an FPGA board"),
    (["fit", "ulx3s", "--board", "icebreaker"], "two boards"),
    (["fit", "--board", "icebreaker", "--seeds", "0"], "--seeds 0 must be at least 1"),
    (["synth"], "--board is required"),
    (["synth", "--board", "de0nano"], "unknown board 'de0nano'"),
])
def test_board_options_are_checked(argv, message, capsys):
    assert main(argv) == 2
    assert message in one_line_error(capsys)


# ----------------------------------------------------------------------------- conventions


def _subparsers():
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in _subparsers().items() for a in sub._actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"options without help text: {missing}"


def test_hardware_commands_share_bits_board_and_json_options():
    subs = _subparsers()
    for name in HW_COMMANDS:
        options = {opt: a for a in subs[name]._actions for opt in a.option_strings}
        assert options["--bits"].help == BITS_HELP and options["--bits"].default is None
        assert not options["--bits"].required
        assert options["--json"].help.startswith("print the result as one JSON object on stdout") or \
            options["--json"].help.startswith("print the summary as one JSON object on stdout")
        assert options["--report"].metavar == "FILE"
    boards = {subs[name]._option_string_actions["--board"].help for name in ("synth", "fit")}
    assert boards == {"target board: icebreaker, ulx3s, generic"}
    assert range_text(INT_BITS) in BITS_HELP
