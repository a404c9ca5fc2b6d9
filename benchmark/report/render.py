"""Renderers: markdown, one self-contained HTML file, csv, LaTeX (booktabs) and json.

Every string that comes from a suite file (title, labels, notes, sources, claim text) is escaped
for the target format: a title like ``<script>`` or ``a | b`` must print as itself.
"""
from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from benchmark.escaping import spreadsheet_safe
from benchmark.report.aggregate import ROW_FIELDS, SELECT_TEXT, SuiteResults
from benchmark.report.provenance import code_versions, header_lines
from benchmark.report.plumbing import is_plumbing, plumbing_note, report_title
from benchmark.vocabulary import TEST_ERROR, JobState, is_scale_metric


FORMATS = ("markdown", "html", "csv", "latex", "json")
FIGURE_KINDS = ("errors", "table", "scales")  # curves.suite_figure; in a report's order, the slowest first
EXTENSIONS = {"markdown": "md", "html": "html", "csv": "csv", "latex": "tex", "json": "json"}

TABLE_HEADER = ("cell", "seeds (mean ± std, n)", "compared", "measured [95 % interval]", "published",
                "diff [90 % CI]", "margin", "verdict", "protocol")
VERDICT_MARK = {"reproduces": "✓ reproduces", "differs": "✗ differs", "inconclusive": "? inconclusive",
                "pending": "… pending", "broken": "✗ broken", "plumbing": "plumbing only (quick run)", "": "—"}
CLAIM_MARK = {"holds": "✓ holds", "fails": "✗ fails", "inconclusive": "? inconclusive", "pending": "… pending",
              "plumbing": "plumbing only (quick run)"}
VERDICT_RULES = (
    "Verdicts (α = 0.05): reproduces = the 90 % CI of diff lies inside ±margin (two one-sided tests); "
    "differs = diff is significant (95 %) and beyond the margin; inconclusive = neither, with the seeds "
    "that would decide it at 80 % power. Each published kind is compared with the matching statistic "
    "of the seeds (see README, \"How to read a verdict\")."
)


@dataclass
class Figure:
    """A drawn figure (curves.py), as the renderers link or embed it. Defined here rather than in
    curves.py so that rendering tables never imports matplotlib."""

    name: str  # e.g. "errors", "alpha"
    title: str
    png: Path
    svg: Path
    png_bytes: bytes
    pdf: Path | None = None  # for a paper (style.FigureStyle.vector)
    # For the HTML report (report/html.py): the figure's size in points (the SVG's viewBox), the
    # hover layer (transparent circles with a <title> each, style.hover_layer) that the SVG file
    # already carries and that the HTML lays over the PNG where the SVG is too big to inline.
    size_pt: tuple[float, float] = (0.0, 0.0)
    hover_svg: str = ""


Band = Literal["std", "range"]
VECTOR_FORMATS = ("svg", "pdf")


@dataclass(frozen=True)
class FigureStyle:
    """What the reader asked of the figures (``bench report --band/--seed-lines/--dpi``). Here, not in
    style.py (which re-exports it), so that the command builds one without importing matplotlib:
    the figures are drawn in worker processes (api.draw_figures), which import it side by side."""

    band: Band = "std"  # the band around the mean over seeds: ±1 std, or min–max
    seed_lines: bool = False  # one thin line per seed as well
    dpi: int = 200  # of the PNG; the SVG and PDF are vector
    # Vector files beside the PNG ("svg" always). PDF on request (bench report --pdf): it costs
    # more than the PNG and SVG together (TrueType embedding), a third of a report's time.
    vector: tuple[str, ...] = ("svg",)

    def band_text(self, n: Sequence[int]) -> str:
        """What the band around a mean line is, e.g. "±1 std over 5 seeds", "min–max over 2–5 seeds"."""
        lo, hi = (min(n), max(n)) if len(n) else (0, 0)
        seeds = f"{lo} seed{'s' if hi != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"
        return f"{'±1 std' if self.band == 'std' else 'min–max'} over {seeds}"


def figure_kinds(res: SuiteResults) -> tuple[str, ...]:
    """The FIGURE_KINDS ``res`` may have something for: α / τ trajectories only where a scale
    metric was recorded (api's workers are sent the results pickled: not for nothing)."""
    names = res.metrics["name"].unique() if len(res.metrics) else ()
    return tuple(k for k in FIGURE_KINDS if k != "scales" or any(is_scale_metric(str(n)) for n in names))


def safe_stem(name: str) -> str:
    """A file-name-safe version of a suite name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "suite"


# ----------------------------------------------------------------------------------------------
# Plain-text cells shared by markdown, html and latex (escaped by each renderer afterwards)


def _num(v: Any, digits: int = 2, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "never" if v > 0 else "-inf"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def measured_text(row: dict[str, Any], pm: str = "±") -> str:
    if row["state"] != JobState.DONE:
        return row["state_text"]  # never a number for an unfinished or broken cell
    if row["mean"] is None:
        return f"no {row['metric']}"
    std = f" {pm} {_num(row['std'])}" if row["std"] is not None else ""
    return f"{_num(row['mean'])}{std} (n={row['n']})"


def interval_text(v: Any, low: Any, high: Any, sign: bool = False) -> str:
    """e.g. "6.60 [6.40, 6.80]"; the bracket is left out when there is no interval."""
    if v is None:
        return ""
    if low is None or high is None:
        return _num(v, sign=sign)
    return f"{_num(v, sign=sign)} [{_num(low, sign=sign)}, {_num(high, sign=sign)}]"


def verdict_text(row: dict[str, Any]) -> str:
    text = VERDICT_MARK.get(row["verdict"] or "", row["verdict"])
    if row["verdict"] == "inconclusive":
        need = row["seeds_needed"]
        text += f": ~{need} seeds decide it" if need else ": no seed count decides it (see note)"
    if row["prior"] and row["verdict"] != "plumbing":
        text += " (prior spread)"
    return text


def row_cells(row: dict[str, Any], pm: str = "±") -> list[str]:
    label = row["label"] if row["metric"] == TEST_ERROR else f"{row['label']} [{row['metric']}]"
    return [
        label,
        measured_text(row, pm),
        row["statistic"] or "",
        interval_text(row["estimate"], row["low"], row["high"]),
        row["published_text"] or "",
        interval_text(row["diff"], row["diff_low"], row["diff_high"], sign=True),
        f"±{_num(row['tolerance'])}" if row["tolerance"] is not None else "",
        verdict_text(row),
        row["protocol"] or "",
    ]


def claim_tests_text(result: Any) -> str:
    """Each comparison's difference (left - right) with its 90 % CI, e.g. "+1.20 [+0.40, +2.00]"."""
    parts = []
    for t in result.tests:
        low, high = (t.low, t.high) if math.isfinite(t.low) and math.isfinite(t.high) and t.low != t.high else (None, None)
        parts.append(f"{t.text}: {interval_text(t.diff, low, high, sign=True)} {t.verdict}"
                     + (f" ({t.note})" if t.note else ""))
    return "; ".join(parts)


CLAIM_HEADER = ("claim", "statement", "verdict", "difference [90 % CI]", "numbers (seed means)")


def _numbers_text(numbers: dict[str, float], reason: str = "") -> str:
    text = "; ".join(f"{k} = {_num(v)}" for k, v in numbers.items())
    return "; ".join(x for x in (reason and f"waiting for {reason}", text) if x)


def _select_line(res: SuiteResults) -> str:
    return f"Reported epoch: {SELECT_TEXT[res.select]}."


def _sources(res: SuiteResults) -> list[str]:
    out = []
    for r in res.records:
        if r["source"] or r["note"]:
            out.append(f"{r['label']}: {' — '.join(x for x in (r['source'], r['note']) if x)}")
    return out


# ----------------------------------------------------------------------------------------------
# Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md_escape(text: Any) -> str:
    """Escape for a markdown table cell or inline text: no raw HTML, no broken pipes."""
    s = " ".join(str(text).split())  # newlines would end a table row
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(res: SuiteResults, figures: list[Figure], out_dir: Path) -> str:
    s = res.suite
    parts = [f"# {md_escape(report_title(s))}", ""]
    if is_plumbing(s):
        parts += [f"> **{md_escape(plumbing_note(s))}**", ""]
    meta = [("suite", s.name), ("source", s.source), ("protocol", s.protocol)]
    parts += [f"- **{k}**: {md_escape(v)}" for k, v in meta if v]
    parts += [f"- **margin** (tolerance): ±{s.tolerance:g} (unless a published value sets its own)",
              f"- **{md_escape(_select_line(res))}**", f"- {md_escape(VERDICT_RULES)}"]
    parts += [f"- **{k}**: {md_escape(v)}" for k, v in header_lines(res)] + [""]
    if s.description:
        parts += [md_escape(s.description), ""]
    parts += ["## Comparison", "", _md_table(TABLE_HEADER, [row_cells(r) for r in res.records]), ""]
    srcs = _sources(res)
    if srcs:
        parts += ["Sources:", ""] + [f"- {md_escape(x)}" for x in srcs] + [""]
    if res.claims:
        parts += ["## Claims", ""]
        rows = [[c.name, c.text, CLAIM_MARK[r.verdict], claim_tests_text(r), _numbers_text(r.numbers, r.reason)]
                for c, r in res.claims]
        parts += [_md_table(CLAIM_HEADER, rows), ""]
    if figures:
        parts += ["## Curves", ""]
        for f in figures:
            rel = f.png.relative_to(out_dir).as_posix() if f.png.is_relative_to(out_dir) else f.png.as_posix()
            svg = f.svg.relative_to(out_dir).as_posix() if f.svg.is_relative_to(out_dir) else f.svg.as_posix()
            vec = f"[{md_escape(f.title)} (SVG)]({svg})"
            if f.pdf is not None:
                pdf = f.pdf.relative_to(out_dir).as_posix() if f.pdf.is_relative_to(out_dir) else f.pdf.as_posix()
                vec += f" · [PDF]({pdf})"
            parts += [f"![{md_escape(f.title)}]({rel})", "", vec, ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# HTML: one self-contained file a reader explores (sortable tables, per-seed drill-down, inline SVG
# figures with tooltips): benchmark.report.html


def _h(text: Any) -> str:
    """Escape for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def render_html(res: SuiteResults, figures: list[Figure]) -> str:
    from benchmark.report.html import render_html as render  # html imports this module's cells

    return render(res, figures)


# ----------------------------------------------------------------------------------------------
# csv, json: machine-readable, the table's fields


SEED_FIELDS = ("seed", "job_id", "epoch", "value")


def render_csv(res: SuiteResults) -> str:
    """One row per compared cell (row = "cell"), followed by one row per seed of that cell
    (row = "seed": seed, job_id, epoch, value), so anyone can redo the statistics; then one row per
    comparison of each claim (row = "claim": label = the claim's name, note = the comparison)."""
    import pandas as pd

    out = []
    for r in res.records:
        out.append({"row": "cell", **r})
        for sr in res.seed_rows(r["label"], r["metric"]):
            out.append({"row": "seed", "suite": r["suite"], "label": r["label"], "metric": r["metric"],
                        "select": r["select"], "state": sr["state"], **{k: sr[k] for k in SEED_FIELDS}})
    for c, cr in res.claims:
        for t in cr.tests or [None]:
            out.append({"row": "claim", "suite": res.suite.name, "label": c.name, "verdict": cr.verdict,
                        "note": t.text if t else cr.reason, "diff": t.diff if t else None,
                        "diff_low": t.low if t else None, "diff_high": t.high if t else None,
                        "df": t.df if t else None, "statistic": t.verdict if t else None})
    columns = ["row", *ROW_FIELDS, *SEED_FIELDS]
    return spreadsheet_safe(pd.DataFrame(out, columns=columns, dtype=object)).to_csv(index=False)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def render_json(res: SuiteResults) -> str:
    s = res.suite
    doc = {
        "suite": s.name, "title": s.title, "source": s.source, "protocol": s.protocol,
        "tolerance": s.tolerance, "select": res.select,
        "code_versions": code_versions(res.jobs), "notices": list(s.notices),
        "rows": [{**{k: _clean(v) for k, v in r.items()}, "seeds": res.seed_rows(r["label"], r["metric"])}
                 for r in res.records],
        "claims": [
            {"name": c.name, "text": c.text, "expr": c.expr, "source": c.source, "verdict": r.verdict,
             "numbers": {k: _clean(v) for k, v in r.numbers.items()}, "reason": r.reason,
             "tests": [{"comparison": t.text, "diff": _clean(t.diff), "diff_low": _clean(t.low),
                        "diff_high": _clean(t.high), "df": _clean(t.df), "verdict": t.verdict, "note": t.note}
                       for t in r.tests]}
            for c, r in res.claims
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------
# LaTeX (booktabs)

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_TEX_RE = re.compile("|".join(re.escape(k) for k in _TEX))


# Unicode that pdflatex's default set-up cannot print (or that a suite text may well contain): math
# mode or a text command each; the check marks are left out where a verdict symbol says them.
_TEX_UNICODE = {"±": r"$\pm$", "≈": r"$\approx$", "≥": r"$\geq$", "≤": r"$\leq$", "α": r"$\alpha$",
                "τ": r"$\tau$", "σ": r"$\sigma$", "μ": r"$\mu$", "×": r"$\times$", "→": r"$\rightarrow$",
                "−": "-", "·": r"$\cdot$", "√": r"$\surd$", "…": r"\ldots{}", "✓": "", "✗": ""}
_TEX_UNICODE_RE = re.compile("|".join(map(re.escape, _TEX_UNICODE)))


def tex_escape(text: Any) -> str:
    s = _TEX_RE.sub(lambda m: _TEX[m.group()], " ".join(str(text).split()))
    return _TEX_UNICODE_RE.sub(lambda m: _TEX_UNICODE[m.group()], s)


# The verdict as a symbol (amssymb's \checkmark; \times and ? need nothing), explained in a legend
# line under the table.
TEX_VERDICT = {"reproduces": r"$\checkmark$", "differs": r"$\times$", "inconclusive": "?", "pending": r"\ldots{}",
               "broken": "broken", "plumbing": "plumbing", "": "--"}
TEX_CLAIM = {"holds": r"$\checkmark$", "fails": r"$\times$", "inconclusive": "?", "pending": r"\ldots{}",
             "plumbing": "plumbing"}
TEX_LEGEND = (r"$\checkmark$ reproduces (the 90\,\% CI of diff lies inside $\pm$margin); $\times$ differs "
              r"(significant and beyond the margin); ? inconclusive (in parentheses: the seeds that would decide "
              r"it at 80\,\% power); \ldots{} pending (jobs unfinished); broken: failed or diverged jobs.")
TEX_PACKAGES = r"\usepackage{booktabs,amssymb}"


def _tex_num(v: Any, digits: int = 2, sign: bool = False) -> str:
    return f"${_num(v, digits, sign)}$" if _num(v, digits, sign) not in ("", "never", "-inf") else tex_escape(
        _num(v, digits, sign))


def _tex_interval(v: Any, low: Any, high: Any, sign: bool = False) -> str:
    r"""$6.60\;[6.40, 6.80]$: the estimate and its interval, in math mode (a real minus sign)."""
    if v is None:
        return ""
    if low is None or high is None:
        return _tex_num(v, sign=sign)
    return f"${_num(v, sign=sign)}\\;[{_num(low, sign=sign)}, {_num(high, sign=sign)}]$"


def _tex_measured(row: dict[str, Any]) -> str:
    if row["state"] != JobState.DONE:
        return tex_escape(row["state_text"])
    if row["mean"] is None:
        return tex_escape(f"no {row['metric']}")
    std = f" \\pm {_num(row['std'])}" if row["std"] is not None else ""
    return f"${_num(row['mean'])}{std}$"


def _tex_verdict(row: dict[str, Any]) -> str:
    mark = TEX_VERDICT.get(row["verdict"] or "", tex_escape(row["verdict"]))
    if row["verdict"] == "inconclusive" and row["seeds_needed"]:
        mark += f" ({row['seeds_needed']})"
    if row["prior"] and row["verdict"] != "plumbing":
        mark += r"\textsuperscript{p}"
    return mark


class _Notes:
    """Footnote marks a, b, c, ... for texts under the table; the same text, the same mark."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts[text] = "abcdefghijklmnopqrstuvwxyz"[len(self.texts) % 26] * (1 + len(self.texts) // 26)
        return r"\textsuperscript{" + self.texts[text] + "}"

    def lines(self) -> list[str]:
        return [r"\textsuperscript{" + m + "}~" + t + r"\par" for t, m in self.texts.items()]


def render_latex(res: SuiteResults) -> str:
    r"""A ``table`` float for ``\input``: booktabs rules, the caption and ``\label{tab:<suite>}``,
    mean $\pm$ std in math mode with n in the header (a footnote where a row has another n), the
    verdict as a symbol with its legend, the protocol differences as footnotes. Needs booktabs and
    amssymb (said in the file's first lines); compiles with a stock pdflatex (tests/test_report_render)."""
    s = res.suite
    title = report_title(s)
    done = [r["n"] for r in res.records if r["state"] == "done" and r["mean"] is not None]
    n_usual = Counter(done).most_common(1)[0][0] if done else None
    notes = _Notes()
    body = []
    for r in res.records:
        label = r["label"] if r["metric"] == TEST_ERROR else f"{r['label']} [{r['metric']}]"
        cell = tex_escape(label)
        if r["protocol"]:
            cell += notes.mark(f"protocol: {tex_escape(r['protocol'])}")
        measured = _tex_measured(r)
        if r["state"] == JobState.DONE and r["mean"] is not None and r["n"] != n_usual:
            expected = f" ({r['n_expected']} expected)" if r["n"] < r["n_expected"] else ""
            measured += notes.mark(f"$n={r['n']}$ seeds in this row{expected}")
        if r["source"] or r["note"]:
            pub = tex_escape(r["published_text"] or "") + notes.mark(
                tex_escape(" — ".join(x for x in (r["source"], r["note"]) if x)).replace("—", "---"))
        else:
            pub = tex_escape(r["published_text"] or "")
        body.append(" & ".join([
            cell, measured, tex_escape(r["statistic"] or ""), _tex_interval(r["estimate"], r["low"], r["high"]),
            pub, _tex_interval(r["diff"], r["diff_low"], r["diff_high"], sign=True),
            f"$\\pm{_num(r['tolerance'])}$" if r["tolerance"] is not None else "", _tex_verdict(r),
        ]) + r" \\")
    n_head = f", $n={n_usual}$" if n_usual is not None else ""
    head = [f"cell", f"seeds (mean $\\pm$ std{n_head})", "compared", r"measured [95\,\% interval]", "published",
            r"diff [90\,\% CI]", "margin", "verdict"]
    caption = tex_escape(title)
    if s.source:
        caption += f". Measured against {tex_escape(s.source)}"
    caption += f". {tex_escape(_select_line(res))}"
    plumbing = [tex_escape(plumbing_note(s)) + r"\par"] if is_plumbing(s) else []
    prior = [r"\textsuperscript{p}~the spread of fewer than 3 seeds came from a prior for the dataset "
             r"(benchmark/report/stats.py)\par"] if any(r["prior"] for r in res.records) else []
    lines = [
        f"% {tex_escape(s.title or s.name)} -- generated by bench report.",
        f"% Needs in the preamble: {TEX_PACKAGES}",
        f"% {tex_escape(VERDICT_RULES)}",
        *[f"% {tex_escape(k)}: {tex_escape(v)}" for k, v in header_lines(res)],
        r"\begin{table}[htbp]", r"\centering", r"\small",
        f"\\caption{{{caption}}}", f"\\label{{tab:{s.name}}}",
        r"\begin{tabular}{lrlrlrrl}", r"\toprule", " & ".join(head) + r" \\", r"\midrule",
        *body, r"\bottomrule", r"\end{tabular}",
        r"\par\smallskip\footnotesize\raggedright",
        *plumbing, f"Verdicts: {TEX_LEGEND}" + r"\par", *prior, *notes.lines(),
        r"\end{table}",
    ]
    if res.claims:
        lines += ["", r"\begin{table}[htbp]", r"\centering", r"\small",
                  f"\\caption{{{tex_escape(title)}: claims}}", f"\\label{{tab:{s.name}-claims}}",
                  r"\begin{tabular}{lp{0.3\linewidth}lp{0.3\linewidth}}", r"\toprule",
                  r"claim & statement & verdict & difference [90\,\% CI] \\", r"\midrule"]
        for c, r in res.claims:
            lines.append(f"{tex_escape(c.name)} & {tex_escape(c.text)} & {TEX_CLAIM.get(r.verdict, tex_escape(r.verdict))} & "
                         f"{tex_escape(claim_tests_text(r) or _numbers_text(r.numbers, r.reason))} \\\\")
        lines += [r"\bottomrule", r"\end{tabular}",
                  r"\par\smallskip\footnotesize\raggedright",
                  r"$\checkmark$ holds (the claimed direction is shown at 95\,\%); $\times$ fails (the opposite "
                  r"is); ? inconclusive; \ldots{} pending.", r"\end{table}"]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[..., str]] = {
    "csv": render_csv, "json": render_json, "latex": render_latex,
}
