"""The reporter's entry points over a Store: build tables, write files, check a suite.

Kept separate from the click commands so tests and the smoke gate can call them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from benchmark.report.aggregate import UNFINISHED, ReportError, SuiteResults, metrics_needed, resolve_select, summarize
from benchmark.report.render import EXTENSIONS, FORMATS, RENDERERS, render_html, render_markdown, safe_stem
from benchmark.suite_types import Job, Suite
from benchmark.validation import did_you_mean
from benchmark.vocabulary import BROKEN_STATES, IMAGES_PER_SECOND, TEST_ERROR, JobState


def resolve_suites(store: Any, names: Sequence[str]) -> list[Suite]:
    """SUITE arguments: a path to a .toml file, or the name of a suite registered in the database.
    No arguments: every suite in the database, by name.

    A registered suite is reported from its stored jobs (label, key and configuration as the
    database holds them), never re-expanded with today's code; a suite file given by path supplies
    the published numbers and claims, and where its jobs differ from the registered ones the report
    says which cells (``Suite.notices``). Only a file never registered is expanded from its text."""
    from benchmark.store import display_url
    from benchmark.suite import SuiteError, load_suite, parse_registered

    registered = {s["name"]: s for s in store.suites()}
    out = []
    for name in names or list(registered):
        p = Path(name)
        if name.endswith(".toml") or p.exists():
            suite = load_suite(p)  # a missing file is a SuiteError naming it
            out.append(as_registered(store, suite, f"the suite file {p}") if suite.name in registered else suite)
            continue
        if name not in registered:
            close = did_you_mean(name, registered)
            hint = f" ({close})" if close else ""
            known = ", ".join(registered) or "none registered"
            raise SuiteError(name, [f"not a suite file and not a suite in the database{hint}; known: {known}"])
        # A problem in the stored text is the database's, not the file's that it was registered from.
        where = f"{display_url(store.url)}: the stored text of suite {name!r} (registered from " \
                f"{registered[name].get('path') or 'unknown'})"
        suite = parse_registered(name, store.suite_text(name), where)
        out.append(as_registered(store, suite, "the registered suite text, expanded by this bench,"))
    return out


def as_registered(store: Any, suite: Suite, what: str) -> Suite:
    """``suite`` with the jobs the database holds for it, and a notice where ``suite``'s own jobs
    (``what`` made them) differ from those."""
    from benchmark.suite import job_differences

    frame = store.jobs_frame([suite.name])
    frame = frame[frame.orphaned_at.isna()]
    stored = tuple(Job(r.label, store.stored_spec(r.job_id, r.config), stored_key=r.key)
                   for r in frame.itertuples())
    notice = job_differences(suite.jobs, stored)
    if notice:
        notice = (f"{what} differs from the jobs registered as {suite.name!r}: {notice}. "
                  "This report shows the registered jobs, as the database holds them.")
    return replace(suite, jobs=stored, notices=suite.notices + ((notice,) if notice else ()))


def _frames(store: Any, suite: Suite, select: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The suite's jobs and the metrics its report reads (metrics_needed: 2-3 of the ~8 a run
    records). The "final" epoch of a job is then its last epoch with one of these recorded, which
    is its last epoch: a run records all its metrics of an epoch together."""
    keys = {j.key for j in suite.jobs}
    jobs = store.jobs_frame([suite.name])
    by_suite = not jobs.empty and jobs["key"].isin(keys).any()
    if not by_suite:
        # A suite file not registered under its name (or renamed): match its jobs by key alone.
        jobs = store.jobs_frame(None)
    jobs = jobs[jobs["key"].isin(keys)] if not jobs.empty else jobs
    names = metrics_needed(suite, resolve_select(suite, select),
                           store.metric_names([suite.name] if by_suite else None)) if not jobs.empty else []
    if jobs.empty or not names:
        return jobs, pd.DataFrame(columns=["job_id", "epoch", "name", "value"])
    # One query per suite; the IN list of job ids only when the jobs live under another name.
    if by_suite:
        metrics = store.metrics_frame([suite.name], names=names)
    else:
        metrics = store.metrics_frame(job_ids=jobs["job_id"].tolist(), names=names)
    return jobs, metrics


def build_suite(store: Any, suite: Suite, select: str | None = None) -> SuiteResults:
    """Aggregate one suite (comparison rows, claims) from the store."""
    from benchmark.store import display_url

    jobs, metrics = _frames(store, suite, select)
    res = summarize(suite, jobs, metrics, select)
    res.database = display_url(store.url)
    return res


def build_tables(store: Any, suites: Iterable[Suite], select: str | None = None) -> list[SuiteResults]:
    """Aggregate every suite (comparison rows, claims) from the store."""
    return [build_suite(store, suite, select) for suite in suites]


def write_reports(
    results: Iterable[SuiteResults], out_dir: str | Path, formats: Sequence[str] = ("markdown",),
    figures: bool = True, style: Any = None,
) -> list[Path]:
    """Write one file per suite and format (and the figures, drawn as ``style``, a
    ``benchmark.report.style.FigureStyle``); return the paths written."""
    results = list(results)
    check_formats(formats)
    drawn: list[list[Any]] = [[] for _ in results]
    if figures and wants_figures(formats):
        drawn = draw_figures(results, Path(out_dir) / "figures", style)
    return write_files(results, drawn, out_dir, formats)


def check_formats(formats: Sequence[str]) -> None:
    for fmt in formats:
        if fmt not in FORMATS:
            raise ReportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def wants_figures(formats: Sequence[str]) -> bool:
    return bool({"markdown", "html"} & set(formats))  # the formats that show figures


def write_files(results: list[SuiteResults], drawn: list[list[Any]], out_dir: str | Path,
                formats: Sequence[str]) -> list[Path]:
    """The report files of ``results`` whose figures are ``drawn`` (one list per suite)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for res, figs in zip(results, drawn):
        stem = safe_stem(res.suite.name)
        for f in figs:
            written += [f.png, f.svg] + ([f.pdf] if f.pdf else [])
        for fmt in formats:
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


def report(store: Any, suites: Sequence[Suite], out_dir: str | Path, formats: Sequence[str] = ("markdown",),
           figures: bool = True, style: Any = None, select: str | None = None,
           ) -> tuple[list[SuiteResults], list[Path]]:
    """bench report: build every suite's tables and write its files (and figures); return the
    results and the paths written. Several large suites are built and drawn in worker processes,
    one per CPU (parallel_plan); the files are the same either way."""
    check_formats(formats)
    for suite in suites:
        resolve_select(suite, select)  # a bad --select fails here, in this process, before any work
    out = Path(out_dir) / "figures" if figures and wants_figures(formats) else None
    workers = parallel_plan(store, suites)
    if workers <= 1:
        results = build_tables(store, suites, select)
        drawn = draw_figures(results, out, style) if out is not None else [[] for _ in results]
        return results, write_files(results, drawn, out_dir, formats)
    written: dict[int, list[Path]] = {}

    def write(i: int, res: SuiteResults, figs: list[Any]) -> None:  # here, while the workers draw the next
        written[i] = write_files([res], [figs], out_dir, formats)

    results = _in_workers(workers, store, list(suites), select, out, style, on_suite=write)
    return results, [p for i in range(len(results)) for p in written[i]]


# Worker processes, one per CPU: matplotlib draws in one thread, and a report of 5 suites of 200
# jobs x 200 epochs (1.6 M metric rows) is ~8 CPU seconds, two thirds of it figures
# (benchmarks/report_speed.py). Worth a fork only for that much work; below, this process does it all.
PARALLEL_MIN_ROWS = 100_000  # metric rows (~ epochs done x the 2 error curves) over all suites
_PENDING: list[Any] = []  # what the forked workers inherit: set before the fork, never pickled


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _workers(n_suites: int, rows: int) -> int:
    import multiprocessing

    if n_suites < 2 or _cpus() < 2 or rows < PARALLEL_MIN_ROWS or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(_cpus(), n_suites)


def parallel_plan(store: Any, suites: Sequence[Suite]) -> int:
    """How many worker processes ``report`` uses: 1 (none) unless there are several suites, CPUs
    and enough rows. The rows are estimated from the jobs table (two curves per epoch done), before
    any metric is read."""
    if len(suites) < 2:
        return 1
    jobs = store.jobs_frame([s.name for s in suites])
    return _workers(len(suites), 2 * int(jobs["epochs_done"].sum()) if not jobs.empty else 0)


def _build_task(i: int) -> SuiteResults:
    store, suites, select = _PENDING[0]
    return build_suite(store, suites[i], select)  # the forked Store opens its own connections


def _draw_task(res: SuiteResults, out: Path, kind: str, style: Any) -> Any:
    from benchmark.report.curves import suite_figure

    return suite_figure(res, out, kind, style)


def _in_workers(workers: int, store: Any, suites: list[Suite], select: str | None, out: Path | None, style: Any,
                built: list[SuiteResults] | None = None,
                on_suite: Callable[[int, SuiteResults, list[Any]], None] | None = None) -> list[SuiteResults]:
    """Build each suite in a worker (unless ``built``), queue its figures as soon as it is built
    (``out=None``: none), drawn by whichever worker is free, and call ``on_suite(i, results,
    figures)`` here as each suite is complete. The results travel pickled: a suite's 80,000 curve
    rows are a few milliseconds. fork: the workers inherit the parsed suites and the open Store;
    matplotlib is imported in the workers, side by side, not here first (half a second)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from benchmark.report.render import FIGURE_KINDS, figure_kinds

    results: list[Any] = list(built) if built is not None else [None] * len(suites)
    kinds: dict[int, tuple[str, ...]] = {}
    figs: dict[tuple[int, str], Any] = {}
    pending: dict[Any, tuple[int, str]] = {}

    def built_one(i: int) -> None:
        if out is None:
            return done_one(i)
        kinds[i] = figure_kinds(results[i])
        if not kinds[i]:
            return done_one(i)
        for kind in kinds[i]:  # the slow kind first
            pending[pool.submit(_draw_task, results[i], out, kind, style)] = (i, kind)

    def done_one(i: int) -> None:
        if on_suite is not None:
            on_suite(i, results[i], [f for k in FIGURE_KINDS if (f := figs.get((i, k))) is not None])

    _PENDING[:] = [(store, suites, select)]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            try:
                for i in range(len(suites)):
                    if built is None:
                        pending[pool.submit(_build_task, i)] = (i, "")
                    else:
                        built_one(i)
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i, kind = pending.pop(fut)
                        if not kind:
                            results[i] = fut.result()  # a worker's error (a StoreError, say) is raised here
                            built_one(i)
                            continue
                        figs[i, kind] = fut.result()
                        if all((i, k) in figs for k in kinds[i]):
                            done_one(i)
            except BaseException:
                pool.shutdown(cancel_futures=True)  # not the rest of the queue after an error or Ctrl-C
                raise
    finally:
        _PENDING.clear()
    return results


def draw_figures(results: list[SuiteResults], out: Path, style: Any = None) -> list[list[Any]]:
    """Every suite's figures (curves.suite_figures), drawn in worker processes where it pays."""
    from benchmark.report.curves import suite_figures

    workers = _workers(len(results), sum(len(r.metrics) for r in results))
    if workers <= 1:
        return [suite_figures(res, out, style) for res in results]
    drawn: dict[int, list[Any]] = {}
    _in_workers(workers, None, [r.suite for r in results], None, out, style, built=results,
                on_suite=lambda i, _, figs: drawn.__setitem__(i, figs))
    return [drawn[i] for i in range(len(results))]


# ----------------------------------------------------------------------------------------------
# bench check


EXIT_OK, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 1, 3  # 2 is a usage error (benchmark.cli)


@dataclass
class CheckResult:
    suite: str
    problems: list[str] = field(default_factory=list)  # differs, fails, unfinished, broken: each says by how much
    undecided: list[str] = field(default_factory=list)  # inconclusive (with the seeds that would decide), plumbing
    passed: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.undecided

    def exit_code(self, allow_inconclusive: bool = False) -> int:
        """0: everything reproduces / holds; 1: something differs, fails, is unfinished or broken;
        3: nothing of that, but something is inconclusive (0 with ``allow_inconclusive``)."""
        if self.problems:
            return EXIT_FAIL
        if self.undecided and not allow_inconclusive:
            return EXIT_INCONCLUSIVE
        return EXIT_OK


def _row_name(r: dict[str, Any]) -> str:
    name = r["label"] if r["metric"] == TEST_ERROR else f"{r['label']} [{r['metric']}]"
    return f"{name} ({r['published_kind']})"


def _ci(r: dict[str, Any]) -> str:
    if r["diff_low"] is None:
        return ""
    return f" [90 % CI {r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"


def check_results(res: SuiteResults) -> CheckResult:
    out = CheckResult(res.suite.name)
    j = res.jobs
    unfinished = j[j["state"].isin(UNFINISHED)]
    if len(unfinished):
        desc = ", ".join(f"{r.label} seed {r.seed} ({r.state})" for r in unfinished.itertuples())
        out.problems.append(f"{len(unfinished)} of {len(j)} jobs not finished: {desc}")
    broken = j[j["state"].isin(BROKEN_STATES)]
    for r in broken.itertuples():
        err = f": {r.error}" if isinstance(r.error, str) and r.error else ""
        out.problems.append(f"{r.label} seed {r.seed} {r.state}{err}")
    for r in res.records:
        if r["published"] is None:
            continue
        out.compared += 1
        name = _row_name(r)
        verdict = r["verdict"]
        if verdict == "reproduces":
            out.passed.append(f"{name}: {r['estimate']:.2f} vs {r['published_text']}: {r['diff']:+.2f}{_ci(r)} "
                              f"within ±{r['tolerance']:g}")
        elif verdict == "differs":
            out.problems.append(
                f"{name}: measured {r['estimate']:.2f} (n={r['n']}) vs published {r['published_text']}: "
                f"{r['diff']:+.2f}{_ci(r)}, differs beyond ±{r['tolerance']:g} by {abs(r['diff']) - r['tolerance']:.2f}"
            )
        elif verdict == "inconclusive":
            need = f"~{r['seeds_needed']} seeds would decide it" if r["seeds_needed"] else "no seed count decides it"
            out.undecided.append(
                f"{name}: measured {r['estimate']:.2f} (n={r['n']}) vs {r['published_text']}: {r['diff']:+.2f}{_ci(r)} "
                f"at margin ±{r['tolerance']:g}: inconclusive; {need}"
                + (f" ({r['note']})" if r["prior"] or r["n"] < 2 else "")
            )
        elif verdict == "plumbing":
            out.undecided.append(f"{name}: quick run, plumbing only: not compared")
        elif verdict == "broken" and r["state"] == JobState.DONE:
            out.problems.append(f"{name}: {r['note'] or 'no value'}")
    for claim, cr in res.claims:
        out.compared += 1
        nums = "; ".join(f"{k} = {v:.4g}" for k, v in cr.numbers.items())
        tests = "; ".join(f"{t.text}: diff {t.diff:+.3g} [90 % CI {t.low:+.3g}, {t.high:+.3g}] {t.verdict}"
                          for t in cr.tests)
        if cr.verdict == "holds":
            out.passed.append(f"claim {claim.name} holds ({tests or nums})")
        elif cr.verdict == "fails":
            out.problems.append(f"claim {claim.name} fails: {claim.expr} ({cr.reason or tests or nums})")
        elif cr.verdict == "inconclusive":
            out.undecided.append(f"claim {claim.name} inconclusive: {claim.expr} ({tests or nums})")
        elif cr.verdict == "plumbing":
            out.undecided.append(f"claim {claim.name}: quick run, plumbing only: not tested")
        else:
            out.problems.append(f"claim {claim.name} pending: {cr.reason}")
    return out


def check_suite(store: Any, suite: Suite, select: str | None = None) -> CheckResult:
    """Compare a suite's results with its published values and claims (bench check)."""
    return check_results(build_tables(store, [suite], select)[0])


def plan_suite(store: Any, suite: Suite) -> list[Any]:
    """bench plan: seeds needed per compared cell and their compute (benchmark.report.plan)."""
    from benchmark.report.plan import plan_rows

    (res,) = build_tables(store, [suite])
    jobs = store.jobs_frame(None)
    speed = store.metrics_frame(names=[IMAGES_PER_SECOND]) if not jobs.empty else None
    return plan_rows(res, jobs, speed)
