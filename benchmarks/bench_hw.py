"""Hardware figures of the accelerator on the boards: today's design beside a fixed older one, one run.

For every board and BITS asked for, ``asqhw synth`` places and routes the shipped digits bundle's
accelerator (generator defaults) twice in this one run, one after the other:

- ``baseline``: the tree of commit :data:`BASELINE_COMMIT` (``git archive`` into a temporary folder),
  its own ``asqhw synth`` with its own shipped bundle;
- ``current``: this tree's ``asqhw synth``;
- ``fast_link`` (boards in :data:`FAST_LINK`): this tree's design again behind the board's fastest
  host link (the iCEBreaker: 12 Mbaud, class-only replies, 9 images in flight), so that the row's
  images/s over the link are what the link, not the default 115200-baud UART, carries.

Both are clocked by the board's PLL at the fastest setting that meets timing on every seed
(``--clock auto``; a baseline tree older than the PLL search runs at the board oscillator), so the
two sides differ by their design, not by how they are clocked.

Each row: Fmax (median and minimum over the seeds), paths nextpnr did not time, logic cells, LUT4,
flip-flops, block RAMs, DSPs, the clock the bitstream runs at (and its PLL setting), cycles per image,
the MAC array's use (MAC-bound cycles over cycles: the share of cycles the array steps), images per
second of compute at that clock, and over the link: what the link carries (its rate from
:func:`link_images_per_s`, which asks :mod:`hw.link` when it offers ``link_budget``) and the lesser of
the two. A design that fails (does not fit, misses its clock, leaves a path untimed, or does not even
elaborate) is a row with ``ok: false`` and its problems, not a crash: the figures of both sides are
what the bench is for. hw.json is written after every row; ``--resume`` continues a run that
stopped (its rows are marked ``resumed``: each baseline/current pair still comes from one run).

Writes ``benchmarks/results/hw.json`` (atomically) with every row and, per board and BITS, the two
sides next to each other (``side_by_side``; the end of the run prints it as a Markdown table). Long:
each synthesis places and routes ``--seeds`` times (the PLL search two or three times that): the
default run (both boards, BITS 3 and 4, 3 seeds, 10 syntheses) takes about 50 minutes on 2 idle cores
(a side: iCEBreaker BITS 3 about 3 minutes, BITS 4 2 minutes as it does not place, ULX3S about 9
minutes), several times that on busy ones.

Usage: ``python benchmarks/bench_hw.py [--boards icebreaker,ulx3s] [--bits 3,4] [--seeds 3]
[--baseline COMMIT] [--out ...]``; ``ASQHW_BENCH_HW_BOARDS`` / ``ASQHW_BENCH_HW_BITS`` /
``ASQHW_BENCH_HW_SEEDS`` set the defaults (for ``make bench``).
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asqhw.atomic import atomic_write_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "hw.json"
#: The design the current one is measured against: main at 555cf22, the digits default design of
#: docs/data/hardware-icebreaker-b3.json before the wide engine's products moved onto DSP blocks
#: (BITS 3: 6675 cycles per image, 36.61 MHz minimum over 3 seeds, PLL 35.25 MHz, 4948 logic
#: cells). Earlier baselines are on record in git: ccf6ebb (6671 cycles, 28.58 MHz, 5076 cells) is
#: the ``baseline`` of the hw.json of commit bd03699; the 7799-cycle design (c2b08a6) the ``current``
#: rows of the hw.json of commit f25f7a2.
BASELINE_COMMIT = "555cf22"
#: ``asqhw synth`` options of the ``fast_link`` row per board: the link at its fastest rate
#: (``docs/link.md``). The ULX3S's FT231X makes 3 Mbaud at most; its link is not benched.
FAST_LINK = {"icebreaker": ("--baud", "12000000", "--reply", "class", "--window", "9")}
#: The rows per board and BITS, in the order they run and are printed.
SIDES = ("baseline", "current", "fast_link")

#: UART framing when :mod:`hw.link` offers no budget function: 8N1, 10 line bits per byte.
LINE_BITS_PER_BYTE = 10


def link_images_per_s(report: dict) -> dict:
    """Bytes per image and images per second the board link of ``report`` carries.

    Uses :func:`hw.link.rates.link_budget` when this tree has it (the link's own account of its
    framing and reply), else the UART's 8N1 framing over the report's bytes in and out per image.
    A report that already holds the link's budget (``images_per_s_pipelined``) is taken as it is.
    """
    link = dict(report.get("link") or {})
    if not link:
        return {}
    if "images_per_s_pipelined" in link:
        return link
    n_logits = (report.get("design") or {}).get("n_logits") or 10  # the digits network when not recorded
    bytes_out = link.get("bytes_out_per_image", (n_logits + 1) * link.get("bytes_out_per_beat", 5))
    try:
        from hw.link.rates import link_budget
    except ImportError:
        link_budget = None
    if link_budget is not None:
        budget = link_budget(input_bytes=link["bytes_in_per_image"], n_logits=n_logits, baud=link["baud"],
                             out_beat_bytes=link.get("bytes_out_per_beat", 5))
        return {**link, **budget, "rate_from": "hw.link.rates.link_budget"}
    per_s = link["baud"] / LINE_BITS_PER_BYTE
    return {**link, "bytes_out_per_image": bytes_out, "bytes_per_s": per_s,
            "images_per_s_pipelined": round(per_s / max(link["bytes_in_per_image"], bytes_out), 1),
            "images_per_s_one_at_a_time": round(per_s / (link["bytes_in_per_image"] + bytes_out), 1),
            "rate_from": "8N1 framing of the report's bytes per image"}


def _packed_over(report: dict) -> int | None:
    """The logic cells nextpnr packed for a design that did not place (its "used > available" problem)."""
    for problem in report.get("problems", []):
        match = re.match(r"(ICESTORM_LC|TRELLIS_COMB): (\d+) used > \d+ available \(nextpnr\)", problem)
        if match:
            return int(match.group(2))
    return None


def summarize(report: dict) -> dict:
    """One row of hw.json from a synthesis ``report.json`` (either tree's)."""
    res = report.get("resources", {})
    est = report.get("estimate") or {}
    cycles = report.get("cycles_per_inference")
    clock = report.get("clock") or {"source": "oscillator", "mhz": report.get("clock_mhz")}
    clock_mhz = report.get("clock_mhz")
    fmax = report.get("fmax_mhz") or {}
    mac_bound = est.get("cycles_mac_bound")
    row = {
        "ok": bool(report.get("ok")),
        "problems": report.get("problems", []),
        "design": report.get("design"),
        "clock": {"source": clock.get("source"), "mhz": clock_mhz,
                  "pll": (clock.get("pll") or {}).get("params"), "passes": clock.get("passes"),
                  "slack_ns_min": (clock.get("slack_ns") or {}).get("min")},
        "fmax_mhz": {"median": fmax.get("median"), "min": fmax.get("min"), "seeds": fmax.get("seeds")},
        "untimed_paths": (report.get("untimed_paths") or {}).get("count"),
        "logic_cells": res.get("logic_cells", {}).get("used") or _packed_over(report),
        "logic_cells_available": res.get("logic_cells", {}).get("available"),
        "lut4": res.get("lut4", {}).get("used"),
        "flip_flops": res.get("flip_flops", {}).get("used"),
        "bram": res.get("block_ram", {}).get("used"),
        "dsp": res.get("dsp", {}).get("used"),
        "estimate": {k: est.get(k) for k in ("lut4", "logic_cells", "ff", "bram", "dsp", "fmax_mhz") if k in est},
        "estimate_error": {k: v.get("error") for k, v in (report.get("estimate_vs_synthesis") or {}).items()},
        "cycles_per_image": cycles,
        "cycles_mac_bound": mac_bound,
        "macs_per_cycle": report.get("macs_per_cycle"),
        "mac_array_use": round(mac_bound / cycles, 3) if mac_bound and cycles else None,
    }
    if cycles and clock_mhz and fmax.get("min"):  # only a design that was placed and routed runs
        compute = clock_mhz * 1e6 / cycles
        row["images_per_s_compute"] = round(compute, 1)
        row["images_per_s_compute_at_fmax_min"] = round(fmax["min"] * 1e6 / cycles, 1)
        link = link_images_per_s(report)
        if link:
            row["link"] = link
            # the host sends the next image after the reply unless the link buffers more (a window)
            carried = link["images_per_s_pipelined"] if link.get("window", 1) > 1 else \
                link["images_per_s_one_at_a_time"]
            row["images_per_s_over_link"] = round(min(compute, carried), 1)
    return row


def _baseline_tree(commit: str, where: Path) -> Path:
    """Unpack ``commit`` of this repository into ``where`` (``git archive``: tracked files only)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    return where


def _synth(tree: Path, board: str, bits: int, seeds: int, out: Path, extra=()) -> tuple[dict, float]:
    """``asqhw synth`` of ``tree`` (run from it, importing it); its report and the wall time."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "asqhw.cli", "synth", "--board", board, "--bits", str(bits),
            "--seeds", str(seeds), "--out", str(out), "--quiet", *extra]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    report_path = out / "report.json"
    if not report_path.exists():  # it failed before synthesis: a row that says why
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        why = f"asqhw synth exit {done.returncode} before any report: " + " | ".join(tail)
        return {"ok": False, "problems": [why]}, wall
    return json.loads(report_path.read_text()), wall


def _clock_options(tree: Path) -> tuple:
    """``--clock auto`` when ``tree``'s ``asqhw synth`` has the PLL search, else nothing (the oscillator)."""
    cli = tree / "hw" / "synth_cli.py"
    return ("--clock", "auto") if cli.exists() and '"--clock"' in cli.read_text() else ()


#: The figures set side by side per board and BITS (:func:`side_by_side`).
COMPARED = ("ok", "clock", "fmax_mhz", "untimed_paths", "logic_cells", "lut4", "bram", "dsp", "cycles_per_image",
            "mac_array_use", "images_per_s_compute", "images_per_s_over_link")


def side_by_side(rows: list) -> list:
    """One entry per board and BITS: the baseline's and the current design's figures next to each other."""
    out = []
    for board, bits in dict.fromkeys((r["board"], r["bits"]) for r in rows):
        pair = {"board": board, "bits": bits}
        for side in SIDES:
            row = next((r for r in rows if (r["board"], r["bits"], r["side"]) == (board, bits, side)), None)
            if row is None:
                continue
            figures = {k: row.get(k) for k in COMPARED}
            figures["clock"] = (row.get("clock") or {}).get("mhz")
            figures["clock_source"] = (row.get("clock") or {}).get("source")
            figures["fmax_mhz"] = {k: (row.get("fmax_mhz") or {}).get(k) for k in ("median", "min")}
            if not row.get("ok"):
                figures["problems"] = row.get("problems")
            pair[side] = {"commit": row.get("commit"), **figures}
        out.append(pair)
    return out


def table(pairs: list) -> str:
    """The side-by-side figures as a Markdown table (printed at the end of a run)."""
    def cell(v):
        return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    head = ("board", "BITS", "side", "ok", "clock MHz", "Fmax med/min", "untimed", "LC", "LUT4", "BRAM", "DSP",
            "cycles", "MAC use", "img/s compute", "img/s link")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in pairs:
        for side in SIDES:
            f = p.get(side)
            if f is None:
                continue
            fm = f["fmax_mhz"]
            lines.append("| " + " | ".join([p["board"], str(p["bits"]), f"{side} {f['commit']}", cell(f["ok"]),
                                            f"{cell(f['clock'])} ({f['clock_source']})",
                                            f"{cell(fm['median'])} / {cell(fm['min'])}",
                                            *(cell(f[k]) for k in ("untimed_paths", "logic_cells", "lut4", "bram",
                                                                   "dsp", "cycles_per_image", "mac_array_use",
                                                                   "images_per_s_compute",
                                                                   "images_per_s_over_link"))]) + " |")
    return "\n".join(lines)


def _resumed_rows(args) -> list:
    """The rows of an earlier ``args.out`` measured against the same baseline (``--resume``): a run that
    stopped, or one with fewer boards or BITS."""
    try:
        earlier = json.loads(args.out.read_text())
    except (OSError, ValueError):
        return []
    if earlier.get("baseline") != args.baseline:
        return []
    return [{**row, "resumed": True} for row in earlier.get("rows", [])]


def _describe() -> str:
    """This tree's commit (``-dirty`` when it has uncommitted changes)."""
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _env_default(name, default):
    return os.environ.get(name) or default


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boards", default=_env_default("ASQHW_BENCH_HW_BOARDS", "icebreaker,ulx3s"))
    parser.add_argument("--bits", default=_env_default("ASQHW_BENCH_HW_BITS", "3,4"))
    parser.add_argument("--seeds", type=int, default=int(_env_default("ASQHW_BENCH_HW_SEEDS", "3")))
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="commit of the older design")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "bench-hw",
                        help="where the syntheses are kept (default build/bench-hw)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--rescan", action="store_true",
                        help="recompute every row of hw.json from its report.json (no synthesis)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of an earlier hw.json of the same baseline and run only the rest")
    args = parser.parse_args(argv)
    boards = [b for b in args.boards.split(",") if b]
    bits_list = [int(b) for b in args.bits.split(",") if b]
    if args.rescan:
        earlier = json.loads(args.out.read_text())
        keep = ("side", "commit", "board", "bits", "seeds", "wall_s", "report", "resumed")
        rows = [{**{k: r[k] for k in keep if k in r}, **summarize(json.loads(Path(r["report"]).read_text()))}
                if Path(r["report"]).exists() else r for r in earlier["rows"]]
        args.baseline, args.seeds = earlier["baseline"], earlier["seeds"]
        return _write(args, earlier["current"], rows, complete=earlier.get("complete", False))
    current = _describe()
    rows = _resumed_rows(args) if args.resume else []
    done_keys = {(r["side"], r["board"], r["bits"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="asqhw-baseline-") as tmp:
        base = _baseline_tree(args.baseline, Path(tmp))
        for board in boards:
            sides = [("baseline", base, args.baseline, _clock_options(base)),
                     ("current", ROOT, current, ("--clock", "auto"))]
            if board in FAST_LINK:
                sides.append(("fast_link", ROOT, current, ("--clock", "auto", *FAST_LINK[board])))
            for bits in bits_list:
                for side, tree, rev, extra in sides:
                    if (side, board, bits) in done_keys:
                        continue
                    if tree == ROOT:  # the tree as this synthesis reads it
                        rev = current = _describe()
                    out = args.build / f"{side}-{board}-b{bits}"
                    print(f"== {side} ({rev}) {board} BITS={bits}", flush=True)
                    report, wall = _synth(tree, board, bits, args.seeds, out, extra)
                    row = {"side": side, "commit": rev, "board": board, "bits": bits, "seeds": args.seeds,
                           **summarize(report), "wall_s": round(wall, 1), "report": str(out / "report.json")}
                    rows.append(row)
                    print(f"   ok={row['ok']} clock {row['clock']['mhz']} MHz, Fmax min {row['fmax_mhz']['min']} "
                          f"MHz, {row['logic_cells']} LC, {row.get('images_per_s_compute')} images/s", flush=True)
                    # written after every row: a long run that is stopped keeps what it measured
                    result = _write(args, current, rows, complete=False)
    result = _write(args, current, rows, complete=True)
    print(table(result["side_by_side"]))
    print(f"wrote {args.out}")
    return result


def _write(args, current: str, rows: list, *, complete: bool) -> dict:
    result = {"machine": platform.machine(), "python": platform.python_version(), "baseline": args.baseline,
              "current": current, "seeds": args.seeds, "complete": complete, "rows": rows,
              "side_by_side": side_by_side(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
