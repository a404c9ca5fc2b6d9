"""The reporter's entry points over a Store: build tables, write files, check a suite.

Kept separate from the click commands so tests and the smoke gate can call them directly.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from benchmark.report.aggregate import UNFINISHED, ReportError, SuiteResults, metrics_needed, resolve_select, summarize
from benchmark.report.render import EXTENSIONS, FORMATS, RENDERERS, render_html, render_markdown, safe_stem
from benchmark.suite_types import Suite

def resolve_suites(store: Any, names: Sequence[str]) -> list[Suite]:
    """SUITE arguments: a path to a .toml file, or the name of a suite registered in the database.
    No arguments: every suite in the database, by name."""
    from benchmark.suite import SuiteError, load_suite, parse_registered

    registered = {s["name"]: s for s in store.suites()}
    out = []
    for name in names or list(registered):
        p = Path(name)
        if name.endswith(".toml") or p.exists():
            out.append(load_suite(p))  # a missing file is a SuiteError naming it
            continue
        if name not in registered:
            close = difflib.get_close_matches(name, list(registered), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(registered) or "none registered"
            raise SuiteError(name, [f"not a suite file and not a suite in the database{hint}; known: {known}"])
        out.append(parse_registered(name, store.suite_text(name), registered[name].get("path") or name))
    return out


def _frames(store: Any, suite: Suite, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    keys = {j.key for j in suite.jobs}
    jobs = store.jobs_frame([suite.name])
    by_suite = not jobs.empty and jobs["key"].isin(keys).any()
    if not by_suite:
        # A suite file not registered under its name (or renamed): match its jobs by key alone.
        jobs = store.jobs_frame(None)
    jobs = jobs[jobs["key"].isin(keys)] if not jobs.empty else jobs
    if jobs.empty or not names:
        return jobs, pd.DataFrame(columns=["job_id", "epoch", "name", "value"])
    # One query per suite; the IN list of job ids only when the jobs live under another name.
    if by_suite:
        metrics = store.metrics_frame([suite.name], names=names)
    else:
        metrics = store.metrics_frame(job_ids=jobs["job_id"].tolist(), names=names)
    return jobs, metrics


def build_tables(store: Any, suites: Iterable[Suite], select: str | None = None) -> list[SuiteResults]:
    """Aggregate every suite (comparison rows, claims) from the store."""
    recorded = store.metric_names()
    out = []
    for suite in suites:
        # Only the metrics the report reads (metrics_needed): 2-3 of the ~8 a run records.
        # The "final" epoch of a job is then its last epoch with one of these recorded, which is
        # its last epoch: a run records all its metrics of an epoch together.
        names = metrics_needed(suite, resolve_select(suite, select), recorded)
        jobs, metrics = _frames(store, suite, names)
        out.append(summarize(suite, jobs, metrics, select))
    return out


def write_reports(
    results: Iterable[SuiteResults], out_dir: str | Path, formats: Sequence[str] = ("markdown",),
    figures: bool = True, style: Any = None,
) -> list[Path]:
    """Write one file per suite and format (and the figures, drawn as ``style``, a
    ``benchmark.report.style.FigureStyle``); return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for res in results:
        stem = safe_stem(res.suite.name)
        figs = []
        if figures and ({"markdown", "html"} & set(formats)):
            from benchmark.report.curves import suite_figures  # matplotlib: only when drawing

            figs = suite_figures(res, out_dir / "figures", style)
            for f in figs:
                written += [f.png, f.svg] + ([f.pdf] if f.pdf else [])
        for fmt in formats:
            if fmt not in FORMATS:
                raise ReportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
            if fmt == "markdown":
                text = render_markdown(res, figs, out_dir)
            elif fmt == "html":
                text = render_html(res, figs)
            else:
                text = RENDERERS[fmt](res)
            path = out_dir / f"{stem}.{EXTENSIONS[fmt]}"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# bench check


@dataclass
class CheckResult:
    suite: str
    problems: list[str] = field(default_factory=list)  # each says what is out and by how much
    passed: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def check_results(res: SuiteResults) -> CheckResult:
    out = CheckResult(res.suite.name)
    j = res.jobs
    unfinished = j[j["state"].isin(UNFINISHED)]
    if len(unfinished):
        desc = ", ".join(f"{r.label} seed {r.seed} ({r.state})" for r in unfinished.itertuples())
        out.problems.append(f"{len(unfinished)} of {len(j)} jobs not finished: {desc}")
    broken = j[j["state"].isin(["failed", "diverged"])]
    for r in broken.itertuples():
        err = f": {r.error}" if isinstance(r.error, str) and r.error else ""
        out.problems.append(f"{r.label} seed {r.seed} {r.state}{err}")
    for r in res.records:
        if r["published"] is None:
            continue
        out.compared += 1
        name = r["label"] if r["metric"] == "test_error" else f"{r['label']} [{r['metric']}]"
        if r["verdict"] == "ok":
            out.passed.append(f"{name}: {r['mean']:.2f} vs {r['published_text']}: {r['diff']:+.2f} "
                              f"within ±{r['tolerance']:g}")
        elif r["verdict"] == "out" and r["diff"] is not None:
            out.problems.append(
                f"{name}: measured {r['mean']:.2f} (n={r['n']}) vs published {r['published_text']}: "
                f"{r['diff']:+.2f}, outside ±{r['tolerance']:g} by {abs(r['diff']) - r['tolerance']:.2f}"
            )
        elif r["verdict"] == "out" and r["state"] == "done":
            out.problems.append(f"{name}: {r['note'] or 'no value'}")
    for claim, cr in res.claims:
        out.compared += 1
        nums = "; ".join(f"{k} = {v:.4g}" for k, v in cr.numbers.items())
        if cr.verdict == "holds":
            out.passed.append(f"claim {claim.name} holds ({nums})")
        elif cr.verdict == "fails":
            out.problems.append(f"claim {claim.name} fails: {claim.expr} ({nums})")
        else:
            out.problems.append(f"claim {claim.name} pending: {cr.reason}")
    return out


def check_suite(store: Any, suite: Suite, select: str | None = None) -> CheckResult:
    """Compare a suite's results with its published values and claims (bench check)."""
    return check_results(build_tables(store, [suite], select)[0])
