"""``asqhw doctor``: is every tool the project runs present and working?"""

from asqhw.toolchain import check_tools


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


def run(args) -> int:
    rows = check_tools()
    print(format_table(rows))
    missing = [r for r in rows if not r.ok]
    if not missing:
        print("\nall tools present")
        return 0
    print(f"\n{len(missing)} tool(s) missing or broken:")
    for fix in dict.fromkeys(r.fix for r in missing):
        names = ", ".join(r.name for r in missing if r.fix == fix)
        print(f"  {names}\n    fix: {fix}")
    return 1
