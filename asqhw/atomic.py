"""Write outputs so that a failure never leaves a half-written file or folder behind.

Everything the project writes for a user goes through these helpers: data lands under a temporary
name in the destination's own directory (same filesystem, so the final ``os.replace`` is atomic) and
is renamed into place only once complete.

Temporary names carry the writer's process id (``.NAME.PID-RANDOM.tmp``), so a later write to the
same destination removes what a killed writer left behind (its process is gone) and never touches
a temporary of a writer still running. One writer per destination at a time is assumed.

Replacing a folder takes two renames (``NAME`` -> ``.NAME.old``, then the new folder -> ``NAME``);
a process killed between them leaves ``.NAME.old`` and no ``NAME``. :func:`recover_dir` puts the
old folder back; every :func:`atomic_dir` runs it first, and readers of a folder may run it too.
So a destination always holds either its previous content or its new one, whole.
"""

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from asqhw.errors import UserError

# What follows ".NAME." in a temporary name: this module's "PID-RANDOM.tmp", or the "RANDOM.tmp"
# (8 characters of tempfile's alphabet) that earlier versions wrote, which carry no writer to ask.
_TMP_TAIL = re.compile(r"(?:(?P<pid>\d+)-[a-z0-9_]+|[a-z0-9_]{8})\.tmp")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def old_dir(path) -> Path:
    """Where :func:`atomic_dir` keeps ``path``'s previous content during a replacement."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def _writer_gone(pid: str | None) -> bool:
    if pid is None:
        return True  # an earlier version's temporary: no writer recorded, none can still be running
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed writer left behind; return them.

    A temporary is stale when the process named in it no longer runs.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}."
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _TMP_TAIL.fullmatch(entry.name[len(prefix):])
        if match is None or not _writer_gone(match["pid"]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def recover_dir(path) -> Path:
    """Finish what an interrupted :func:`atomic_dir` replacement of ``path`` left; return ``path``.

    ``.NAME.old`` beside a missing ``NAME`` is the previous folder of a replacement killed between
    its two renames: it is renamed back. Beside an existing ``NAME`` it is a leftover of a
    replacement that completed, and is removed. Stale temporaries are removed too.
    """
    path = Path(path)
    old = old_dir(path)
    if old.is_dir() and not old.is_symlink():
        if not os.path.lexists(path):
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    remove_stale_temporaries(path)
    return path


def atomic_write_bytes(path, data: bytes, *, keep_if_unchanged: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    With ``keep_if_unchanged`` a file that already holds exactly ``data`` is left alone, so its
    timestamp, and any simulator build made from it, stays valid. Stale temporaries of ``path``
    (from a killed writer) are removed first.
    """
    path = Path(path)
    if keep_if_unchanged and path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str, *, keep_if_unchanged: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), keep_if_unchanged=keep_if_unchanged)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path):
    """Build a folder under a temporary name and move it to ``path`` only on success.

    Yields the temporary folder. On success an existing ``path`` is replaced as a whole; on any
    exception the temporary folder is removed and ``path`` is left exactly as it was. An earlier
    replacement that was killed is recovered first (:func:`recover_dir`), so a kill at any point
    leaves ``path`` with its previous content or its new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        # recover_dir removed any .old beside an existing path; the rename below then cannot fail
        old = old_dir(path)
        os.replace(path, old)
    # Between these two renames only .NAME.old holds the content: recover_dir restores it.
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_writable(path, *, what: str, fix: str, folder: bool = False, inside: bool = False) -> None:
    """Raise UserError unless ``path`` can be written, before any work is done.

    Outputs are written under a temporary name beside ``path`` and renamed into place, so what
    must be writable is the folder that holds ``path`` (its nearest existing ancestor, which the
    write would create the rest under). ``folder``: ``path`` is an output folder, so an existing
    file there is refused too.

    Parameters
    ----------
    path : path-like
        The output file or folder.
    what : str
        What is written there, for the message (e.g. ``"the Verilog folder"``).
    fix : str
        How to pick another place (e.g. ``"pass --out with a writable folder"``).
    inside : bool
        Files are written inside the folder ``path`` itself (not as a whole beside it), so an
        existing ``path`` must be writable too.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"cannot write {what} {path}: it is a file, not a folder. Fix: {fix}")
    if not folder and path.is_dir():
        raise UserError(f"cannot write {what} {path}: it is a folder, not a file. Fix: {fix}")
    parent = path.absolute() if inside and path.is_dir() else path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {what} {path}: {parent} is a file, not a folder. Fix: {fix}")
    try:  # the real test: permissions, read-only mounts, root's overrides all answer here
        fd, probe = tempfile.mkstemp(prefix=".asqhw-probe.", dir=parent)
    except OSError as err:
        raise UserError(f"cannot write {what} {path}: folder {parent} is not writable ({err.strerror}). "
                        f"Fix: {fix}, or make {parent} writable") from None
    os.close(fd)
    os.unlink(probe)
