"""The HTML report: one self-contained file that a reader explores offline.

- Tables sort: a click on a column header sorts by it (again: the other way), numbers as numbers
  (each numeric cell carries its raw value in ``data-sort``), empty cells last; ``aria-sort`` on
  the header says the order to a screen reader. A few lines of plain JavaScript inline, no library.
- Every row of the comparison table opens (``<details>``) on its seeds: each one's values at the
  reported epoch, epochs done, wall time, device, code version, state, and the end of its log.
- Figures are inline SVG, so they zoom without blur, with a ``<title>`` tooltip on the data points
  (the value, the spread, n: style.hover_layer). An SVG above INLINE_SVG_BYTES (dense curves:
  80 lines of 200 epochs are 1.2 MB of path data) is replaced by its PNG inside a small SVG that
  carries the same tooltips: the page stays a few hundred KB. A click on a figure zooms it to the
  window (again, or Esc: back).
  Why not plotly or vega-lite: their runtimes are 1-4 MB of JavaScript that a self-contained page
  would have to inline, and matplotlib already draws these figures for the paper; tooltips and a
  zoom are all the page needs on top.
- The header names the database (password hidden), the code versions, and torch / CUDA / device.

Nothing is fetched at view time (no external URL anywhere), and every string from a suite or the
database is escaped: a label ``<script>`` prints as text.
"""
from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.report.aggregate import SuiteResults
from benchmark.report.plumbing import is_plumbing, plumbing_note, report_title
from benchmark.report.provenance import header_lines
from benchmark.report.render import (
    CLAIM_HEADER, CLAIM_MARK, TABLE_HEADER, VERDICT_RULES, Figure, _h, _numbers_text, _select_line, _sources,
    claim_tests_text, row_cells,
)
from benchmark.vocabulary import TRAINED_STATES

INLINE_SVG_BYTES = 400_000  # larger SVGs go in as their PNG (with the same tooltips)
LOG_LINES = 12  # of each seed's log in the drill-down
_SKIP_METRICS = ("alpha.", "tau", "iterations")  # not a seed's "final values" (α/τ: the figure shows them)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} th button{all:unset;cursor:pointer} th button::after{content:" \\2195";color:#999}
th[aria-sort=ascending] button::after{content:" \\25B2";color:#222}
th[aria-sort=descending] button::after{content:" \\25BC";color:#222}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.reproduces td.verdict,td.holds{color:#070} tr.differs td.verdict,tr.broken td.verdict,td.fails{color:#b00}
tr.inconclusive td.verdict,td.inconclusive,tr.pending td.verdict,td.pending{color:#a60} .proto{font-size:12px;color:#555}
.plumbing{background:#fff3cd;border-left:4px solid #a60;padding:.5em 1em}
summary{cursor:pointer} table.seeds{font-size:12px;margin:.5em 0} table.seeds td,table.seeds th{padding:2px 6px}
pre.log{font-size:11px;max-height:14em;max-width:60em;overflow:auto;background:#f7f7f7;margin:.3em 0;padding:.4em}
figure.fig{margin:1em 0;cursor:zoom-in;max-width:900px} figure.fig svg{width:100%;height:auto;display:block}
figure.fig.zoomed{position:fixed;inset:0;margin:0;padding:1em;max-width:none;background:#fff;z-index:9;
 overflow:auto;cursor:zoom-out} figure.fig.zoomed svg{max-height:calc(100vh - 4em)}
.hover circle:hover{fill-opacity:.3}
"""

# Sorting: numeric where both cells hold numbers (data-sort, else the text), else text compared
# with numeric collation ("resnet-20" before "resnet-110"); empty cells last in either direction.
_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  var heads=t.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads,function(th,col){
    th.querySelector('button').addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
      Array.prototype.forEach.call(heads,function(h){h.setAttribute('aria-sort','none');});
      th.setAttribute('aria-sort',dir>0?'ascending':'descending');
      var key=function(r){var c=r.cells[col];return c.hasAttribute('data-sort')?c.getAttribute('data-sort'):c.textContent.trim();};
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=key(a),y=key(b);
        if(x===''||y==='')return (x==='')-(y==='');
        var nx=Number(x),ny=Number(y);
        if(!isNaN(nx)&&!isNaN(ny))return dir*(nx-ny);
        return dir*x.localeCompare(y,undefined,{numeric:true});
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
document.querySelectorAll('figure.fig').forEach(function(f){
  var toggle=function(){f.classList.toggle('zoomed');f.setAttribute('aria-expanded',f.classList.contains('zoomed'));};
  f.addEventListener('click',toggle);
  f.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();toggle();}});
});
document.addEventListener('keydown',function(e){
  if(e.key==='Escape')document.querySelectorAll('figure.zoomed').forEach(function(f){f.classList.remove('zoomed');});
});
"""


def _sort_value(v: Any) -> str:
    """A number as data-sort text; "" for none (sorted last)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v))


def _header_row(names: tuple[str, ...]) -> str:
    return "<tr>" + "".join(f'<th aria-sort="none"><button type="button">{_h(n)}</button></th>' for n in names) + "</tr>"


# ----------------------------------------------------------------------------------------------
# Per-seed drill-down


def _duration(start: Any, end: Any) -> str:
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return ""
    s = int((end - start).total_seconds())
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Seeds:
    """What the drill-down shows per job, looked up once per report."""

    def __init__(self, res: SuiteResults) -> None:
        from benchmark.runner.show import log_tail  # how `bench show` reads a job's log

        self._log_tail = log_tail
        self.res = res
        self.values = res.at_selected.to_dict()
        names = res.at_selected.index.get_level_values(1).unique() if len(res.at_selected) else []
        self.metrics = sorted(str(n) for n in names if not str(n).startswith(_SKIP_METRICS))
        j = res.jobs.dropna(subset=["job_id"])
        self.jobs = {r["job_id"]: r for r in j.to_dict("records")}

    def table(self, label: str, metric: str) -> str:
        head = ("seed", "job", "state", "epoch reported", "epochs done", *[m.replace("_", " ") for m in self.metrics],
                "wall time (last attempt)", "device", "code version", "log")
        rows = []
        for sr in self.res.seed_rows(label, metric):
            job = self.jobs.get(sr["job_id"], {}) if sr["job_id"] is not None else {}
            vals = []
            for m in self.metrics:
                v = self.values.get((sr["job_id"], m)) if sr["state"] in TRAINED_STATES else None
                vals.append(f'<td class="num">{"" if v is None or v != v else f"{v:.2f}"}</td>')
            env = json.loads(job["environment"]) if isinstance(job.get("environment"), str) else {}
            log = env.get("log")
            tail = self._log_tail(Path(log), LOG_LINES) if log else None
            if tail:
                log_cell = f"<details><summary>last lines</summary><pre class=\"log\">{_h(tail)}</pre></details>"
            else:
                log_cell = _h("not readable from here" if log else "")
            device = job.get("device") or env.get("device") or ""
            gpu = env.get("gpu")
            epochs = job.get("epochs_done")
            rows.append(
                f"<tr><td>{sr['seed']}</td><td>{_h(sr['job_id'] if sr['job_id'] is not None else '')}</td>"
                f"<td>{_h(sr['state'])}</td><td class=\"num\">{_h(sr['epoch'] if sr['epoch'] is not None else '')}</td>"
                f"<td class=\"num\">{_h('' if epochs is None or epochs != epochs else int(epochs))}</td>{''.join(vals)}"
                f"<td>{_duration(job.get('started_at'), job.get('finished_at'))}</td>"
                f"<td>{_h(device)}{_h(f' ({gpu})') if gpu else ''}</td>"
                f"<td><code>{_h(job.get('code_version') or '')}</code></td><td>{log_cell}</td></tr>")
        return (f'<table class="seeds"><thead><tr>{"".join(f"<th>{_h(h)}</th>" for h in head)}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table>")


# ----------------------------------------------------------------------------------------------
# Figures


_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)  # the XML declaration and the DOCTYPE (an external DTD URL)


def figure_markup(f: Figure) -> str:
    """The figure as inline SVG: matplotlib's own (vector, with its tooltips) when small enough,
    else its PNG in an SVG of the same size with the same tooltip layer."""
    if f.svg.exists() and f.svg.stat().st_size <= INLINE_SVG_BYTES:
        body = _PROLOG.sub("", f.svg.read_text(encoding="utf-8"), count=1)
        return body.replace("<svg ", f'<svg role="img" aria-label="{_h(f.title)}" ', 1)
    w, h = f.size_pt
    b64 = base64.b64encode(f.png_bytes).decode()
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_h(f.title)}" '
            f'viewBox="0 0 {w:.1f} {h:.1f}" width="{w:.1f}pt" height="{h:.1f}pt">'
            f'<image width="{w:.1f}" height="{h:.1f}" href="data:image/png;base64,{b64}"/>{f.hover_svg}</svg>')


# ----------------------------------------------------------------------------------------------
# The page

# Columns of TABLE_HEADER whose cells sort by a number, and which row field that number is.
_SORT_FIELD = {1: "mean", 3: "estimate", 4: "published", 5: "diff", 6: "tolerance"}


def render_html(res: SuiteResults, figures: list[Figure]) -> str:
    s = res.suite
    title = report_title(s)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_h(title)}</h1>"]
    if is_plumbing(s):
        out.append(f'<p class="plumbing"><strong>{_h(plumbing_note(s))}</strong></p>')
    out.append('<ul id="header">')
    for k, v in (("suite", s.name), ("source", s.source), ("protocol", s.protocol)):
        if v:
            out.append(f"<li><b>{k}</b>: {_h(v)}</li>")
    out += [f"<li><b>margin</b> (tolerance): ±{s.tolerance:g} (unless a published value sets its own)</li>",
            f"<li><b>{_h(_select_line(res))}</b></li>", f"<li>{_h(VERDICT_RULES)}</li>"]
    out += [f"<li><b>{_h(k)}</b>: {_h(v)}</li>" for k, v in header_lines(res)] + ["</ul>"]
    if s.description:
        out.append(f"<p>{_h(s.description)}</p>")
    out += ["<h2>Comparison</h2>",
            "<p>Click a column header to sort; click a cell's name for its seeds.</p>",
            '<table id="comparison" class="sortable"><thead>', _header_row(TABLE_HEADER), "</thead><tbody>"]
    seeds = _Seeds(res)
    numeric = {1, 3, 5, 6}
    for r in res.records:
        cells = row_cells(r)
        n_seeds = len(res.seed_rows(r["label"], r["metric"]))
        tds = [f'<td data-sort="{_h(cells[0])}"><details><summary>{_h(cells[0])}</summary>'
               f"<p>{n_seeds} seed{'s' if n_seeds != 1 else ''}, values at the reported epoch:</p>"
               f"{seeds.table(r['label'], r['metric'])}</details></td>"]
        for i, c in enumerate(cells[1:], start=1):
            cls = "num" if i in numeric else "verdict" if i == 7 else "proto" if i == 8 else ""
            title_attr = f' title="{_h(r["source"])}"' if i == 4 and r["source"] else ""
            sort = f' data-sort="{_sort_value(r[_SORT_FIELD[i]])}"' if i in _SORT_FIELD else ""
            tds.append(f'<td class="{cls}"{title_attr}{sort}>{_h(c)}</td>')
        out.append(f'<tr class="{_h(r["verdict"] or r["state"])}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    srcs = _sources(res)
    if srcs:
        out += ["<p>Sources:</p><ul>"] + [f"<li>{_h(x)}</li>" for x in srcs] + ["</ul>"]
    if res.claims:
        out += ["<h2>Claims</h2>", '<table id="claims" class="sortable"><thead>', _header_row(CLAIM_HEADER),
                "</thead><tbody>"]
        for c, r in res.claims:
            out.append(f"<tr><td>{_h(c.name)}</td><td>{_h(c.text)}<br><code>{_h(c.expr)}</code></td>"
                       f'<td class="{_h(r.verdict)}">{_h(CLAIM_MARK[r.verdict])}</td>'
                       f"<td>{_h(claim_tests_text(r))}</td>"
                       f"<td>{_h(_numbers_text(r.numbers, r.reason))}</td></tr>")
        out.append("</tbody></table>")
    if figures:
        out += ["<h2>Curves</h2>", "<p>Hover over a point for its value; click a figure to zoom (Esc: back).</p>"]
        for f in figures:
            out.append(f'<figure class="fig" id="fig-{_h(f.name)}" tabindex="0" aria-expanded="false">'
                       f"{figure_markup(f)}<figcaption>{_h(f.title)}</figcaption></figure>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out)
