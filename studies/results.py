"""docs/results.md and its plot, regenerated from the rows ``asqhw compare`` measured.

The words of the page live in :data:`TEMPLATE` (``studies/results_template.md``), cut into named
blocks with ``$name`` placeholders; this module computes the figures and tables from the rows and
fills the blocks in, so the page never disagrees with its table. Sections that other generators keep
in the page (between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, e.g. the ASQ comparison of
``python -m studies.asq_adapt report``) survive a rewrite.
"""

import re
from functools import cache
from pathlib import Path
from string import Template

from asqhw.atomic import atomic_write_bytes, atomic_write_text
from studies.compare import DESIGN_TITLES, DESIGNS, Row, shipped_frac_bits

PLOT_NAME = "results-accuracy-vs-luts.png"
BOARD_TITLES = {"icebreaker": "iCE40 UP5K", "ulx3s": "ECP5-85F", "generic": "generic gates (NAND2 eq.)"}
#: The page's text: blocks of Markdown with ``string.Template`` placeholders (see its opening comment).
TEMPLATE = Path(__file__).with_name("results_template.md")
_BLOCK_MARK = re.compile(r"^<!-- block: ([\w-]+) -->$", re.MULTILINE)
#: A section another generator keeps in the page: ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``.
_KEPT_SECTION = re.compile(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", re.DOTALL)


@cache
def _blocks(path: Path = TEMPLATE) -> dict[str, Template]:
    """The template's blocks by name (the text before the first block is a comment for editors)."""
    parts = _BLOCK_MARK.split(path.read_text())
    names, bodies = parts[1::2], parts[2::2]
    return {name: Template(body.strip("\n")) for name, body in zip(names, bodies, strict=True)}


def _fill(block: str, **figures) -> str:
    """Block ``block`` of the template with its placeholders filled (a missing one raises KeyError)."""
    return _blocks()[block].substitute(**figures)


def _fmt(value, digits=1, none="-"):
    return none if value is None else f"{value:.{digits}f}"


def table(rows: list[Row]) -> str:
    """The comparison table in Markdown, one line per (board, BITS, design)."""
    rows = main_rows(rows)
    head = ("| device | BITS | design | LUT4 / MAC | LUT4 | FF | BRAM | DSP | Fmax median (MHz) | "
            "Fmax min (MHz) | digits top-1 (%) | LUT4 estimate |")
    lines = [head, "|" + "---|" * 12]
    order = {b: i for i, b in enumerate(BOARD_TITLES)}
    designs = list(DESIGNS)
    for r in sorted(rows, key=lambda r: (order.get(r.board, 9), r.bits, designs.index(r.design))):
        if r.board == "generic":
            continue
        fmax_med = _fmt(r.fmax_median) if r.fits else "does not fit"
        lines.append(
            f"| {BOARD_TITLES.get(r.board, r.board)} | {r.bits} | {DESIGN_TITLES[r.design]} | "
            f"{r.lut4_per_mac:.1f} | {r.lut4} | {r.ff} | {r.bram} | {r.dsp} | {fmax_med} | "
            f"{_fmt(r.fmax_min) if r.fits else '-'} | {_fmt(r.accuracy)} | {_estimate(r)} |"
        )
    return "\n".join(lines)


def generic_table(rows: list[Row]) -> str:
    """The technology-independent column: Yosys gates and NAND2 equivalents per MAC."""
    gen = [r for r in main_rows(rows) if r.board == "generic"]
    if not gen:
        return ""
    lines = ["| BITS | design | gates / MAC | FF | NAND2 equivalents / MAC |", "|---|---|---|---|---|"]
    designs = list(DESIGNS)
    for r in sorted(gen, key=lambda r: (r.bits, designs.index(r.design))):
        lines.append(f"| {r.bits} | {DESIGN_TITLES[r.design]} | {r.gates / r.macs:.1f} | {r.ff} | "
                     f"{r.nand2_per_mac:.1f} |")
    return "\n".join(lines)


def _pw(kind: str, bits: int, frac_bits: int | None = None) -> int:
    from hw.rtl.mul import product_shape

    f = shipped_frac_bits(bits) if frac_bits is None else frac_bits
    return product_shape(kind, bits, bits, False, f).width


def main_rows(rows: list[Row]) -> list[Row]:
    """The rows of the main table (the POST designs at the exporter's F), without the F sweep."""
    return [r for r in rows if not r.sweep]


def sweep_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.sweep]


#: The cost budget of POST (docs/design.md section 2.5): a POST MAC at most this many times a POT MAC (LUT4, same BITS).
BUDGET = 1.25


def frac_table(rows: list[Row]) -> str:
    """The F sweep: LUT4 per MAC of the shared-table POST array and its ratio to POT, per device, beside
    golden's faithfulness at that F (flips, golden top-1, the teacher-forced code bound)."""
    sweep = sweep_rows(rows)
    if not sweep:
        return ""
    main = main_rows(rows)
    boards = [b for b in BOARD_TITLES if any(r.board == b for r in sweep)]
    head = "| BITS | F | POST product width | " + " | ".join(
        f"{BOARD_TITLES[b]} LUT4 / MAC | {BOARD_TITLES[b]} POST / POT" for b in boards) + \
        " | flips (of 360) | golden top-1 (%) | max code bound E | meets both |"
    lines = [head, "|" + "---|" * (7 + 2 * len(boards))]
    for bits in sorted({r.bits for r in sweep}):
        for f in sorted({r.frac_bits for r in sweep if r.bits == bits}):
            cells, ok = [], True
            fid = None
            for b in boards:
                got = _by(sweep, board=b, bits=bits, frac_bits=f)
                pot = _by(main, board=b, bits=bits, design="pot")
                if not got:
                    cells += ["-", "-"]
                    continue
                fid = got[0]
                ratio = got[0].lut4_per_mac / pot[0].lut4_per_mac if pot else None
                ok = ok and ratio is not None and ratio <= BUDGET
                cells += [f"{got[0].lut4_per_mac:.1f}", "-" if ratio is None else f"{ratio:.3f}"]
            faithful = fid is not None and fid.flips is not None and fid.flips <= 2 and fid.code_bound < 1
            mark = " (shipped)" if f == shipped_frac_bits(bits) else ""
            lines.append(
                f"| {bits} | {f}{mark} | {_pw('post', bits, f)} | " + " | ".join(cells) + " | "
                + ("-" if fid is None or fid.flips is None else
                   f"{fid.flips} | {fid.golden_top1:.2f} | {fid.code_bound:.2f}")
                + (" | - | -" if fid is None or fid.flips is None else "")
                + f" | {'yes' if ok and faithful else 'no'} |")
    return "\n".join(lines)


def frac_text(rows: list[Row]) -> str:
    """The F trade-off in words, with the shipped bundles' F for each BITS of the sweep."""
    sweep = sweep_rows(rows)
    if not sweep:
        return ""
    bits_seen = sorted({r.bits for r in sweep})
    return _fill("frac_text", defaults=", ".join(f"BITS {b}: F = {shipped_frac_bits(b)}" for b in bits_seen))


def _metric(row: Row) -> float:
    return row.nand2_per_mac if row.board == "generic" else row.lut4_per_mac


def _estimate(row: Row) -> str:
    if row.lut4_estimate is None:
        return "-"
    return f"{row.lut4_estimate} ({100 * (row.lut4_estimate - row.lut4) / row.lut4:+.0f} %)"


def _by(rows, **keys):
    return [r for r in rows if all(getattr(r, k) == v for k, v in keys.items())]


def ratios(rows: list[Row]) -> list[dict]:
    """POST / POT and POST / int LUT4 per MAC, per board and BITS."""
    rows = main_rows(rows)
    out = []
    for board in dict.fromkeys(r.board for r in rows):
        for bits in dict.fromkeys(r.bits for r in rows):
            got = {r.design: r for r in _by(rows, board=board, bits=bits)}
            if "post" not in got:
                continue
            post = _metric(got["post"])
            out.append({
                "board": board, "bits": bits, "post": post,
                "post_over_pot": post / _metric(got["pot"]) if "pot" in got else None,
                "post_over_int": post / _metric(got["int"]) if "int" in got else None,
                "private_over_shared": (_metric(got["post-private"]) / post
                                        if "post-private" in got else None),
                "two_sums_over_pot": (_metric(got["post-2acc"]) / _metric(got["pot"])
                                      if "post-2acc" in got and "pot" in got else None),
                "two_sums_over_int": (_metric(got["post-2acc"]) / _metric(got["int"])
                                      if "post-2acc" in got and "int" in got else None),
            })
    return out


def plot(rows: list[Row], path: Path) -> Path:
    """Accuracy against LUT4 per MAC, one marker per design, one panel per device."""
    import io

    rows = main_rows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = [b for b in dict.fromkeys(r.board for r in rows) if b != "generic"]
    fig, axes = plt.subplots(1, len(boards), figsize=(5.5 * len(boards), 4.2), squeeze=False)
    markers = {3: "o", 4: "s"}
    colors = dict(zip(DESIGNS, ("tab:red", "tab:orange", "tab:purple", "tab:blue", "tab:green", "tab:gray"),
                      strict=True))
    for ax, board in zip(axes[0], boards, strict=True):
        for r in _by(rows, board=board):
            ax.scatter(r.lut4_per_mac, r.accuracy if r.accuracy is not None else 0.0,
                       marker=markers.get(r.bits, "^"), color=colors[r.design], s=60,
                       label=f"{DESIGN_TITLES[r.design]}, {r.bits} bits")
        ax.set_title(f"{BOARD_TITLES.get(board, board)}: accuracy against LUT4 per MAC")
        ax.set_xlabel("LUT4 per MAC (Yosys, out of context)")
        ax.set_ylabel("digits test top-1 (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_results(rows: list[Row], docs_dir, *, seeds: int, extra: str = "", epochs=None) -> list[Path]:
    """Write ``docs_dir/results.md`` and its plot; return both paths.

    The sections other generators keep in the page (``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``)
    are carried over, after the regenerated text, as ``studies.asq_adapt.replace_block`` appends them.
    """
    docs_dir = Path(docs_dir)
    png = plot(rows, docs_dir / PLOT_NAME)
    page = docs_dir / "results.md"
    text = render(rows, seeds=seeds, extra=extra, epochs=epochs)
    kept = _KEPT_SECTION.finditer(page.read_text()) if page.is_file() else ()
    for section in kept:
        text = text.rstrip() + "\n\n" + section.group(0) + "\n"
    md = atomic_write_text(page, text)
    return [md, png]


def render(rows: list[Row], *, seeds: int, extra: str = "", epochs=None) -> str:
    """The page (without the sections other generators keep in it): ``extra`` goes after the analysis."""
    bits_seen = sorted({r.bits for r in main_rows(rows)})
    seeds = max((r.seeds for r in rows if r.seeds), default=seeds)
    return _fill(
        "page",
        pe=rows[0].pe,
        simd=rows[0].simd,
        fracs=", ".join(f"F = {shipped_frac_bits(b)} at {b} bits" for b in bits_seen),
        seeds=seeds,
        seeds_noun="seed" if seeds == 1 else "seeds",
        epochs_note="" if epochs is None else _fill("epochs_note", epochs=epochs),
        table=table(rows),
        plot_name=PLOT_NAME,
        generic_table=generic_table(rows),
        frac_text=frac_text(rows),
        frac_table=frac_table(rows),
        analysis=_analysis(rows),
        extra=f"\n\n{extra}" if extra else "",
    ) + "\n\n"


def _analysis(rows: list[Row]) -> str:
    """One line per measured ratio, then the reasons (the template's ``analysis`` block)."""
    lines = []
    sweep = rows
    rows = main_rows(rows)
    for q in ratios(rows):
        where = {"device": BOARD_TITLES.get(q["board"], q["board"]), "bits": q["bits"]}
        if q["post_over_pot"] is not None:
            lines.append(_fill(
                "post_over_pot", **where, ratio=f"{q['post_over_pot']:.2f}", budget=BUDGET,
                unit="NAND2 equivalents" if q["board"] == "generic" else "LUT4",
                verdict="within" if q["post_over_pot"] <= BUDGET else "ABOVE"))
        if q["post_over_int"] is not None:
            lines.append(_fill(
                "post_over_int", **where, ratio=f"{q['post_over_int']:.2f}",
                percent=f"{abs(1 - q['post_over_int']) * 100:.0f}",
                comparative="cheaper" if q["post_over_int"] < 1 else "dearer"))
        if q["two_sums_over_pot"] is not None:
            lines.append(_fill(
                "two_sums", **where, ratio_pot=f"{q['two_sums_over_pot']:.2f}",
                ratio_int=f"{q['two_sums_over_int']:.2f}", budget=BUDGET,
                verdict="within" if q["two_sums_over_pot"] <= BUDGET else "above"))
        if q["private_over_shared"] is not None:
            lines.append(_fill("private_tables", **where, ratio=f"{q['private_over_shared']:.2f}"))
    bits_seen = sorted({r.bits for r in rows})
    lines += ["", _fill(
        "analysis",
        widths=", ".join(f"{b} bits: POST {_pw('post', b)}, POT {_pw('pot', b)}, int {_pw('int', b)}"
                         for b in bits_seen),
        fracs=", ".join(f"{shipped_frac_bits(b)} at {b} bits" for b in bits_seen),
        frac_verdict=_frac_verdict(sweep),
    )]
    return "\n".join(lines)


def _frac_verdict(rows: list[Row]) -> str:
    """Which BITS meet the cost budget at the default F, and the cheapest faithful F that does not."""
    out = []
    main = main_rows(rows)
    for bits in sorted({r.bits for r in sweep_rows(rows)}):
        f0 = shipped_frac_bits(bits)
        worst = {}
        for f in sorted({r.frac_bits for r in sweep_rows(rows) if r.bits == bits}):
            ratios_f = []
            for r in _by(sweep_rows(rows), bits=bits, frac_bits=f):
                pot = _by(main, board=r.board, bits=bits, design="pot")
                if pot:
                    ratios_f.append(r.lut4_per_mac / pot[0].lut4_per_mac)
            if ratios_f:
                worst[f] = max(ratios_f)
        if f0 not in worst:
            continue
        within = [f for f, q in worst.items() if q <= BUDGET]
        faithful = [r.frac_bits for r in _by(sweep_rows(rows), bits=bits)
                    if r.flips is not None and r.flips <= 2 and r.code_bound < 1]
        figures = {"bits": bits, "frac": f0, "budget": BUDGET, "worst": f"{worst[f0]:.2f}"}
        if worst[f0] <= BUDGET:
            out.append(_fill("frac_within_budget", **figures))
        else:
            cheaper = max(within, default=None)
            remedy = (_fill("frac_cheaper_unfaithful", cheaper=cheaper, faithful=min(faithful))
                      if cheaper is not None and faithful else _fill("frac_none_within"))
            out.append(_fill("frac_above_budget", **figures, remedy=remedy))
    return " ".join(out)


def synth_section(reports: list[dict]) -> str:
    """The accelerator's own synthesis results (``make synth`` reports found under build/synth)."""
    if not reports:
        return ""
    lines = [
        "| board | BITS | MUL | PE x SIMD | LUT4 used / available | BRAM | DSP | Fmax median / min (MHz) | "
        "clock met | cycles / inference | inferences/s at clock | LUT4 estimate (error) |",
        "|" + "---|" * 12,
    ]
    for r in reports:
        d = r["design"]
        if "generic" in r:
            g = r["generic"]
            lines.append(f"| generic | {d['bits']} | {d['mul']} | {d['pe']} x {d['simd']} | "
                         f"{g['gates']} gates, {g['flip_flops']} FF ({g['nand2_equivalents']} NAND2 eq.) | - | - | "
                         f"- | - | {r['cycles_per_inference']} | - | - |")
            continue
        res = r["resources"]
        est = r.get("estimate_vs_synthesis", {}).get("lut4", {})
        err = "-" if est.get("error") is None else f"{est['estimate']} ({100 * est['error']:+.0f} %)"
        fmax = r.get("fmax_mhz")
        fm = "-" if fmax is None else f"{fmax['median']:.1f} / {fmax['min']:.1f}"
        ips = r.get("inferences_per_s", {}).get("at_board_clock")
        lines.append(
            f"| {r['board']} | {d['bits']} | {d['mul']} | {d['pe']} x {d['simd']} | "
            f"{res['lut4']['used']} / {res['lut4']['available']} | {res['block_ram']['used']} | "
            f"{res['dsp']['used']} | {fm} | {'yes' if r.get('clock_met') else 'NO'} | "
            f"{r['cycles_per_inference']} | {'-' if ips is None else f'{ips:.0f}'} | {err} |"
        )
        for problem in r.get("problems", []):
            lines.append(f"|  | | | | {problem} | | | | | | | |")
    return _fill("synth_section", table="\n".join(lines))


def collect_synth_reports(build_dir) -> list[dict]:
    """Every ``build/synth/*/report.json``, in name order (each with the estimate of its own run)."""
    import json

    return [json.loads(p.read_text()) for p in sorted(Path(build_dir).glob("synth/*/report.json"))]
