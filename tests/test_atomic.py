"""asqhw.atomic: outputs appear complete or not at all, with ordinary permissions."""

import os

import pytest

from asqhw.atomic import atomic_dir, atomic_write_text


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
