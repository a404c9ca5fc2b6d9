"""Renderers: markdown, one self-contained HTML file, csv, LaTeX (booktabs) and json.

Every string that comes from a suite file (title, labels, notes, sources, claim text) is escaped
for the target format: a title like ``<script>`` or ``a | b`` must print as itself.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmark.escaping import spreadsheet_safe
from benchmark.report.aggregate import ROW_FIELDS, SELECT_TEXT, SuiteResults
from benchmark.report.provenance import code_versions, header_lines
from benchmark.report.plumbing import is_plumbing, plumbing_note, report_title

FORMATS = ("markdown", "html", "csv", "latex", "json")
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
    if row["state"] != "done":
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
    label = row["label"] if row["metric"] == "test_error" else f"{row['label']} [{row['metric']}]"
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


def tex_escape(text: Any) -> str:
    s = _TEX_RE.sub(lambda m: _TEX[m.group()], " ".join(str(text).split()))
    return s.replace("±", r"$\pm$").replace("≈", r"$\approx$").replace("✓", "").replace("✗", "").replace("…", "").replace(
        "≥", r"$\geq$").replace("α", r"$\alpha$")


def render_latex(res: SuiteResults) -> str:
    s = res.suite
    head = ["cell", "seeds", "compared", r"measured [95\,\% interval]", "published", r"diff [90\,\% CI]",
            "margin", "verdict"]
    lines = [
        f"% {tex_escape(s.title or s.name)} -- generated by bench report; needs \\usepackage{{booktabs}}",
        f"% {tex_escape(_select_line(res))}",
        f"% {tex_escape(VERDICT_RULES)}",
        r"\begin{tabular}{lrlrlrrl}", r"\toprule",
        " & ".join(head) + r" \\", r"\midrule",
    ]
    for r in res.records:
        cells = row_cells(r)[:8]
        lines.append(" & ".join(tex_escape(c).strip() for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if res.claims:
        lines += ["", r"\begin{tabular}{llll}", r"\toprule",
                  r"claim & verdict & difference [90\,\% CI] & numbers \\", r"\midrule"]
        for c, r in res.claims:
            lines.append(f"{tex_escape(c.name)} & {r.verdict} & {tex_escape(claim_tests_text(r))} & "
                         f"{tex_escape(_numbers_text(r.numbers, r.reason))} \\\\")
        lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[..., str]] = {
    "csv": render_csv, "json": render_json, "latex": render_latex,
}
