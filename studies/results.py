"""docs/results.md and its plot, regenerated from the rows ``asqhw compare`` measured.

The hand-written analysis around the table lives in :data:`TEXT_HEAD` / :func:`_analysis`; the
numbers in it are all computed from the rows, so the page never disagrees with its table.
"""

from pathlib import Path

from asqhw.atomic import atomic_write_bytes, atomic_write_text
from studies.compare import DESIGN_TITLES, DESIGNS, Row, default_frac_bits

PLOT_NAME = "results-accuracy-vs-luts.png"
BOARD_TITLES = {"icebreaker": "iCE40 UP5K", "ulx3s": "ECP5-85F", "generic": "generic gates (NAND2 eq.)"}


USAGE = """## Reproduce, and run on a board

- `make compare` regenerates this page (`asqhw compare --seeds N --pe P --simd S` for other settings;
  `--no-fmax` skips place and route, `--no-accuracy` the training).
- `make synth BOARD=icebreaker|ulx3s|generic BITS=3 [PE= SIMD= MUL= MODEL=]` builds the whole
  accelerator: `build/synth/<board>-b<bits>/` holds the bitstream (`board_top.bin` for the
  iCEBreaker, `board_top.bit` for the ULX3S) and `report.json`: device; LUT4, logic cells,
  flip-flops, block RAMs and DSPs used and available; Fmax per seed with median and minimum;
  whether the board clock is met (by the bitstream's seed, and by every seed); MACs per cycle; cycles
  per inference; inferences per second at the board clock and at Fmax; the resource estimate beside
  the synthesized counts. A design that does not fit or misses the clock keeps its report and the
  command fails (exit 2) printing the figures.
- `asqhw fit BOARD` tries PE x SIMD from the highest inferences per second down and reports the first
  that fits and meets the board clock (`build/fit/<board>-b<bits>/fit.json`).
- On a board: program the bitstream (iCEBreaker: `iceprog board_top.bin`; ULX3S:
  `openFPGALoader -b ulx3s board_top.bit`), then `asqhw host --port /dev/ttyUSB1 --bits 3` sends the
  360 test images at 115200 baud and checks every logit and class against the golden model. The
  protocol: the host writes an image's 64 int8 codes; the board answers one 5-byte little-endian
  beat per logit (bits 0..31 the value, bit 32 = 0) and a last beat with the class (bit 32 = 1).
  `asqhw host --simulate` speaks the same protocol to the design simulated in-process.
"""


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

    f = default_frac_bits(bits) if frac_bits is None else frac_bits
    return product_shape(kind, bits, bits, False, f).width


def main_rows(rows: list[Row]) -> list[Row]:
    """The rows of the main table (the POST designs at the exporter's F), without the F sweep."""
    return [r for r in rows if not r.sweep]


def sweep_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.sweep]


#: The cost budget of issue 7: a POST MAC at most this many times a POT MAC (LUT4, same BITS).
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
            mark = " (default)" if f == default_frac_bits(bits) else ""
            lines.append(
                f"| {bits} | {f}{mark} | {_pw('post', bits, f)} | " + " | ".join(cells) + " | "
                + ("-" if fid is None or fid.flips is None else
                   f"{fid.flips} | {fid.golden_top1:.2f} | {fid.code_bound:.2f}")
                + (" | - | -" if fid is None or fid.flips is None else "")
                + f" | {'yes' if ok and faithful else 'no'} |")
    return "\n".join(lines)


def frac_text(rows: list[Row]) -> str:
    """The F trade-off in words, with the numbers of the sweep."""
    sweep = sweep_rows(rows)
    if not sweep:
        return ""
    bits_seen = sorted({r.bits for r in sweep})
    defaults = ", ".join(f"BITS {b}: F = {default_frac_bits(b)}" for b in bits_seen)
    return (
        "The POST product is `a * 2^(e/2)` in units of `2^-F`: the odd-exponent table `T[a] = round(a * sqrt2 "
        "* 2^F)` carries F fractional bits, and every even-exponent product carries F zero bits to line up "
        "with it, so F widens every product, every adder of the PE's tree and the accumulator. Each bit of "
        "F costs a few LUT4 per MAC (table below). Fewer bits make golden less faithful to the float model "
        "(whose POST weights are exact powers of sqrt2): the table's rounding moves an odd product by up to "
        "half an LSB of `2^-F`, so the worst case of the error it adds to a requantizer's input doubles with "
        "each bit removed. The teacher-forced requantizer bound E of docs/arithmetic.md section 6 uses each "
        "input's actual table error `|acc - acc*|` (golden's accumulator minus the exact one of the same "
        "input): still a rigorous bound, only tighter, since the roundings of different table entries "
        "have both signs and cancel in part. Golden counts as faithful when at most 2 of the 360 test predictions "
        "differ from the float model's and E < 1 (given the same input, no code moves by more than one: "
        "what `tests/test_golden_models.py` asserts); the flips, golden top-1 and E below are those of the "
        "shipped checkpoint `models/checkpoints/digits-b<BITS>.pt` exported at that F "
        "(`asqhw export ... --post-frac-bits F`). POST / POT divides by the POT row of the table above. "
        f"The exporter's default ({defaults}; `golden.formats.default_post_frac_bits`) is the smallest F "
        "with E < 1 at both shipped POST widths; the main table above is measured at it. The trade-off: "
        "each further bit of F buys a smaller E (a wider margin to one code, and fewer free-running code "
        "moves, docs/arithmetic.md 2.2) and costs LUT4 on every MAC; below the default, E >= 1 and a "
        "code may move by more than one given the same input."
    )


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
    """Write ``docs_dir/results.md`` and its plot; return both paths."""
    docs_dir = Path(docs_dir)
    png = plot(rows, docs_dir / PLOT_NAME)
    text = render(rows, seeds=seeds, extra=extra, epochs=epochs)
    md = atomic_write_text(docs_dir / "results.md", text)
    return [md, png]


def render(rows: list[Row], *, seeds: int, extra: str = "", epochs=None) -> str:
    pe, simd = rows[0].pe, rows[0].simd
    bits_seen = sorted({r.bits for r in main_rows(rows)})
    fracs = ", ".join(f"F = {default_frac_bits(b)} at {b} bits" for b in bits_seen)
    seeds = max((r.seeds for r in rows if r.seeds), default=seeds)
    parts = [
        "# Results: POST against its baselines",
        "",
        "Regenerated by `make compare` (`asqhw compare`); every number below comes from that run. "
        "Hand edits are overwritten.",
        "",
        "## Method",
        "",
        f"- Same generator, same array: a {pe} x {simd} (PE x SIMD) MAC array, `hw.rtl.mac.MacArray` (the "
        "main engine of `asq_accel`), with weights and unsigned activations both BITS wide and the "
        "accumulator sized for the digits net's fan-in (3 x 3 x 16 = 144: one product plus 8 guard bits). "
        "Only the multiplier differs: POST with one `a * sqrt2` table per activation lane broadcast to the "
        "PE shifters; POST with a private table per MAC (a systolic row, so Yosys cannot merge the "
        "tables: `studies.compare.PrivateTableArray`); POST with no table at all, even- and odd-exponent "
        "products summed apart and the odd sum multiplied by `round(sqrt2 * 2^F)` once per output "
        "(`studies.compare.TwoAccPostArray`, DESIGN.md 2.2's second design; it rounds once per output, so it "
        "is not the golden arithmetic); POT (a barrel shift); uniform two's complement "
        "integers with multipliers in logic (DSPs off); the same with the board's DSPs allowed. "
        f"The POST designs use the exporter's table precision ({fracs}; `post_frac_bits`, "
        "docs/arithmetic.md 2.2); the F sweep below measures the shared-table design at other F.",
        "- LUT4 and flip-flops: Yosys 0.70 (`synth_ice40`, `synth_ecp5 -abc9 -nowidelut`) *out of "
        "context*: the array is the top module and its ports stay ports, so no harness is counted and "
        "nothing is optimised away. ECP5 LUT4 = `LUT4` + 2 x `CCU2C` (a carry cell holds two LUT4s). "
        "LUT4 per MAC = LUT4 / (PE x SIMD), which includes each PE's adder tree and accumulator: every "
        "kind needs them, but their width follows the product width, which is part of a multiplier's "
        "cost. No control baseline has to be subtracted because the out-of-context netlist holds "
        "nothing but the array.",
        f"- Fmax: nextpnr 0.11 on the board (iCEBreaker, ULX3S), median and minimum over {seeds} "
        f"seed{'s' if seeds != 1 else ''} (median = minimum with one seed), "
        "with the array inside `studies.compare.MacHarness` (inputs from a shift register fed by one pin, "
        "accumulators XOR-reduced into registers that drive one LED): the harness adds only "
        "flip-flop-to-flip-flop paths, so the array's own paths set Fmax.",
        "- Accuracy: the digits model (`quant`, same recipe and seed"
        + ("" if epochs is None else f", {epochs} epochs instead of the recipe's 30 to keep the run short")
        + ") trained once per weight format with "
        "LSQ activations (`lsq+post`, `lsq+pot`, `lsq`), so only the weights differ; top-1 on the 360 "
        "test images (digits is easy: every format lands within a few tenths of a percent). The "
        "private-table and two-sum POST designs and the DSP integer design take the accuracy of their "
        "multiplier kind (the two-sum design rounds differently from golden, so its accuracy would need its "
        "own golden model; its column is the POST model's).",
        "- LUT4 estimate: `hw.eda.estimate` before any tool runs (its error against Yosys in brackets).",
        "",
        "## Table",
        "",
        table(rows),
        "",
        f"![accuracy against LUT4 per MAC]({PLOT_NAME})",
        "",
        "ASIC-style column: the same arrays through Yosys' technology-independent `synth` (no FPGA "
        "primitive anywhere), counted as gates and as NAND2 gate equivalents (`hw.eda.synth.GATE_EQUIVALENTS`: "
        "typical standard-cell areas, a flip-flop = 5.33).",
        "",
        generic_table(rows),
        "",
        "## The POST table precision F",
        "",
        frac_text(rows),
        "",
        frac_table(rows),
        "",
        "## What it shows",
        "",
        _analysis(rows),
    ]
    if extra:
        parts += ["", extra]
    parts += ["", USAGE]
    return "\n".join(parts) + "\n"


def _analysis(rows: list[Row]) -> str:
    lines = []
    sweep = rows
    rows = main_rows(rows)
    for q in ratios(rows):
        dev = BOARD_TITLES.get(q["board"], q["board"])
        bits = q["bits"]
        if q["post_over_pot"] is not None:
            verdict = "within" if q["post_over_pot"] <= 1.25 else "ABOVE"
            unit = "NAND2 equivalents" if q["board"] == "generic" else "LUT4"
            lines.append(f"- {dev}, {bits} bits: a POST MAC costs {q['post_over_pot']:.2f}x a POT MAC in {unit} "
                         f"({verdict} the 1.25x budget).")
        if q["post_over_int"] is not None:
            word = "cheaper" if q["post_over_int"] < 1 else "dearer"
            lines.append(f"- {dev}, {bits} bits: POST is {abs(1 - q['post_over_int']) * 100:.0f} % {word} "
                         f"than the uniform integer MAC in logic ({q['post_over_int']:.2f}x).")
        if q["two_sums_over_pot"] is not None:
            verdict = "within" if q["two_sums_over_pot"] <= 1.25 else "above"
            lines.append(f"- {dev}, {bits} bits: POST with two sums costs {q['two_sums_over_pot']:.2f}x POT "
                         f"({verdict} 1.25x) and {q['two_sums_over_int']:.2f}x the integer MAC.")
        if q["private_over_shared"] is not None:
            lines.append(f"- {dev}, {bits} bits: private tables cost {q['private_over_shared']:.2f}x the "
                         "shared ones.")
    bits_seen = sorted({r.bits for r in rows})
    fracs = ", ".join(f"{default_frac_bits(b)} at {b} bits" for b in bits_seen)
    widths = ", ".join(
        f"{b} bits: POST {_pw('post', b)}, POT {_pw('pot', b)}, int {_pw('int', b)}" for b in bits_seen)
    lines += [
        "",
        "Why POST does not win by the paper's B-fold. The paper counts the multiplier alone: a B x B "
        "array multiplier has about B^2 partial-product bits against a shifter's B log2(B). At 3 and 4 "
        "bits that gap is a handful of LUTs, and a MAC is mostly what every kind shares: the product "
        "register, each PE's adder tree and the accumulator, whose widths follow the product width. "
        f"Signed product widths in these arrays ({widths}) show the catch: the POST product carries "
        f"the F fractional bits of the `a * sqrt2` table (F = {fracs}), so POST's adder tree and "
        "accumulator are wider than POT's, and that, not the multiplier, is what the table-based POST "
        "MAC pays over POT; the F sweep above prices each bit of F. "
        + _frac_verdict(sweep) +
        " The two-sum design removes the fractional bits "
        "from the array (no table; `sqrt2` applied once per output, in the shared requantizer) but pays "
        "a second adder tree and accumulator in every PE: with SIMD = 4 inputs per PE that is no "
        "saving (the lines above give its ratio); it would pay off only with many more inputs per PE. "
        "It also rounds once per output instead of once per product, so using it in `asq_accel` would "
        "need the golden model (the specification) to define that rounding first.",
        "",
        "Private tables: at 3 bits the table has 8 entries, one LUT4 level per output bit, which ABC "
        "merges into the first shifter mux, so a private table per MAC costs almost nothing extra; at 4 "
        "bits (16 entries) it already costs more, and with 8-bit activations (256 entries, DESIGN.md "
        "2.2) the shared table per lane is what keeps POST affordable.",
        "",
        "DSPs: Yosys maps a product to an iCE40 `SB_MAC16` only when it is at least 11 bits wide, so "
        "3- and 4-bit products stay in logic even with `-dsp` (the UP5K's 8 DSPs could hold at most 8 "
        "MACs anyway). On the ECP5 every product goes to a `MULT18X18D` when DSPs are allowed: an 18 x "
        "18 multiplier spent on a 3 x 3 product, 16 of the 156 for this array.",
        "",
        "Fmax: every array runs far above the boards' clocks (12 MHz iCEBreaker, 25 MHz ULX3S); the "
        "clock is never what limits these MACs.",
    ]
    return "\n".join(lines)


def _frac_verdict(rows: list[Row]) -> str:
    """Which BITS meet the 1.25x budget at the default F, and the cheapest faithful F that does not."""
    out = []
    main = main_rows(rows)
    for bits in sorted({r.bits for r in sweep_rows(rows)}):
        f0 = default_frac_bits(bits)
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
        if worst[f0] <= BUDGET:
            out.append(f"At {bits} bits the default F = {f0} keeps POST within {BUDGET}x POT on every device "
                       f"(at most {worst[f0]:.2f}x).")
        else:
            best = max(within, default=None)
            out.append(f"At {bits} bits the default F = {f0} costs up to {worst[f0]:.2f}x POT, ABOVE the "
                       f"{BUDGET}x budget; " + (f"F <= {best} would be within it, but golden is faithful "
                                                f"(at most 2 flips and E < 1) only from F = {min(faithful)} "
                                                "up (table above), so no F meets both there."
                                                if best is not None and faithful else
                                                "no F of the sweep is within it."))
    return " ".join(out)


def synth_section(reports: list[dict]) -> str:
    """The accelerator's own synthesis results (``make synth`` reports found under build/synth)."""
    if not reports:
        return ""
    lines = [
        "## The whole accelerator (`make synth`)",
        "",
        "From the `report.json` files under `build/synth/` when this page was generated: `asq_accel` behind "
        "the UART link, clocked by the board oscillator. Fmax over the seeds of each run; the estimate is "
        "`hw.eda.estimate` (no tool run) against Yosys' count.",
        "",
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
    return "\n".join(lines)


def collect_synth_reports(build_dir) -> list[dict]:
    """Every ``build/synth/*/report.json``, in name order (each with the estimate of its own run)."""
    import json

    return [json.loads(p.read_text()) for p in sorted(Path(build_dir).glob("synth/*/report.json"))]
