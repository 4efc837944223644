"""asqhw.atomic: outputs appear complete or not at all, with ordinary permissions; killed writes recover."""

import os
import subprocess
import sys

import pytest

from asqhw.atomic import atomic_dir, atomic_write_text, old_dir, recover_dir


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_written_file_has_ordinary_permissions_and_no_leftovers(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "out.txt", "data")
    finally:
        os.umask(old)
    assert path.read_text() == "data"
    assert _mode(path) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_failed_folder_build_keeps_the_old_folder(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("half-way")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_folder_replaced_whole_with_ordinary_permissions(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "stale.txt").write_text("x")
    old = os.umask(0o022)
    try:
        with atomic_dir(target) as tmp:
            (tmp / "fresh.txt").write_text("y")
    finally:
        os.umask(old)
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert _mode(target) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_keep_if_unchanged_leaves_an_identical_file_alone(tmp_path):
    path = atomic_write_text(tmp_path / "design.v", "module m; endmodule\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    atomic_write_text(path, "module m; endmodule\n", keep_if_unchanged=True)
    assert os.stat(path).st_mtime_ns == 1_000_000_000
    atomic_write_text(path, "module n; endmodule\n", keep_if_unchanged=True)
    assert path.read_text() == "module n; endmodule\n"
    assert os.stat(path).st_mtime_ns != 1_000_000_000


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_replacement_killed_between_its_renames_is_recovered(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    os.replace(target, old_dir(target))  # what a kill after the first rename leaves
    (tmp_path / f".bundle.{_dead_pid()}-abcd1234.tmp").mkdir()  # the new folder, never renamed
    assert recover_dir(target) == target
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_next_write_recovers_and_removes_stale_temporaries(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    os.replace(target, old_dir(target))
    dead = tmp_path / f".bundle.{_dead_pid()}-x1y2z3.tmp"
    dead.mkdir()
    (dead / "vectors.npz").write_bytes(b"half")
    legacy = tmp_path / ".bundle.k3j_2x9q.tmp"  # an earlier version's name: no writer recorded
    legacy.mkdir()
    live = tmp_path / f".bundle.{os.getppid()}-live.tmp"  # a running writer's: kept
    live.mkdir()
    sibling = tmp_path / ".bundle.x.123-abc.tmp"  # belongs to a folder named "bundle.x"
    sibling.mkdir()
    with atomic_dir(target) as tmp:
        assert sorted(p.name for p in tmp_path.iterdir() if p != tmp) == sorted(
            ["bundle", live.name, sibling.name])
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bundle", live.name, sibling.name])


def test_old_folder_beside_a_complete_one_is_a_leftover(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    old_dir(target).mkdir()
    (old_dir(target) / "a.txt").write_text("half-deleted old")
    recover_dir(target)
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_file_write_removes_a_killed_writers_temporary(tmp_path):
    stale = tmp_path / f".fit.json.{_dead_pid()}-q8w7e6r5.tmp"
    stale.write_text("{")
    atomic_write_text(tmp_path / "fit.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.json"]
