"""Write outputs so that a failure never leaves a half-written file or folder behind.

Everything the project writes for a user goes through these helpers: data lands under a temporary
name in the destination's own directory (same filesystem, so the final ``os.replace`` is atomic) and
is renamed into place only once complete.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes, *, keep_if_unchanged: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    With ``keep_if_unchanged`` a file that already holds exactly ``data`` is left alone, so its
    timestamp, and any simulator build made from it, stays valid.
    """
    path = Path(path)
    if keep_if_unchanged and path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    exception the temporary folder is removed and ``path`` is left exactly as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
