"""``bench report`` and ``bench check``: thin click commands over benchmark.report.api.

Exit codes of ``bench check``:
  0  every published value reproduces and every claim holds;
  1  something differs, a claim fails, a job is unfinished, failed or diverged (printed, with by how much);
  2  usage error (bad suite, bad database, bad option): `bench` turns every UserError into a message;
  3  nothing of 1, but some value or claim is inconclusive (printed with the seeds that would decide
     it), or the suite is a --quick run (plumbing only). ``--allow-inconclusive`` turns 3 into 0.
"""
from __future__ import annotations

import sys
import time

import click

from benchmark.report.aggregate import ReportError
from benchmark.report.render import FORMATS
from benchmark.store import URL_HELP, Store
from benchmark.vocabulary import SELECTIONS, JobState



@click.command()
@click.argument("suites", nargs=-1)
@click.option("--db", default=None, help=URL_HELP)
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS), default=("markdown",),
              show_default=True, help="Output format; repeat for several.")
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the reports; figures go to OUT/figures/.")
@click.option("--select", type=click.Choice(SELECTIONS), default=None,
              help="Override the suite's epoch selection (best_test only where the suite selects it).")
@click.option("--figures/--no-figures", default=True, show_default=True, help="Draw error curves.")
@click.option("--band", type=click.Choice(["std", "range"]), default="std", show_default=True,
              help="Band around the mean over seeds: ±1 std, or min–max.")
@click.option("--seed-lines", is_flag=True, help="Also draw one thin line per seed.")
@click.option("--dpi", type=click.IntRange(50, 1200), default=200, show_default=True,
              help="PNG resolution (SVG and PDF are vector).")
@click.option("--pdf", is_flag=True, help="Also write each figure as PDF (for pdflatex).")
def report(suites: tuple[str, ...], db: str | None, formats: tuple[str, ...], out_dir: str,
           select: str | None, figures: bool, band: str, seed_lines: bool, dpi: int, pdf: bool) -> None:
    """Tables, claims and curves for SUITE (a .toml file or a registered name; default: all).

    Figures (OUT/figures/, PNG + SVG (+ PDF with --pdf) at print size): error curves per family with the seed
    spread, error against depth with 95 % t-intervals and the published values, α / τ trajectories."""
    from benchmark.report import api

    t0 = time.perf_counter()
    store = Store(db, create=False)  # a report never creates a database
    parsed = api.resolve_suites(store, suites)
    if not parsed:
        raise ReportError("no suites in the database; register one with `bench run SUITE` or name a suite file")
    style = None
    if figures:
        from benchmark.report.render import FigureStyle  # not style.py: matplotlib is imported where figures are drawn

        style = FigureStyle(band=band, seed_lines=seed_lines, dpi=dpi, vector=("svg", "pdf") if pdf else ("svg",))
    try:
        results, written = api.report(store, parsed, out_dir, formats, figures=figures, style=style, select=select)
    except OSError as e:  # --out under a file, a read-only folder, a full disk
        raise ReportError(f"cannot write the reports to {out_dir}: {e.strerror or e}"
                          f"{' (' + e.filename + ')' if e.filename else ''}; choose another --out") from None
    for res in results:
        n_done = int((res.jobs["state"] == JobState.DONE).sum())
        click.echo(f"{res.suite.name}: {n_done}/{len(res.jobs)} jobs done, {len(res.rows)} rows, "
                   f"{len(res.claims)} claims")
    for p in written:
        click.echo(f"wrote {p}")
    click.echo(f"report took {time.perf_counter() - t0:.2f} s")


@click.command()
@click.argument("suite")
@click.option("--db", default=None, help=URL_HELP)
@click.option("--select", type=click.Choice(SELECTIONS), default=None,
              help="Override the suite's epoch selection (best_test only where the suite selects it).")
@click.option("-v", "--verbose", is_flag=True, help="Also list what passed.")
@click.option("--allow-inconclusive", is_flag=True,
              help="Exit 0 instead of 3 when nothing differs or fails but something is inconclusive.")
def check(suite: str, db: str | None, select: str | None, verbose: bool, allow_inconclusive: bool) -> None:
    """Exit 0 if SUITE reproduces and its claims hold; 1 if something differs, fails or is unfinished;
    3 if the rest is inconclusive (2: usage error)."""
    from benchmark.report.api import check_suite, resolve_suites

    store = Store(db, create=False)  # a report never creates a database
    (parsed,) = resolve_suites(store, [suite])
    result = check_suite(store, parsed, select)
    if verbose:
        for line in result.passed:
            click.echo(f"  ok   {line}")
    for line in result.problems:
        click.echo(f"  OUT  {line}")
    for line in result.undecided:
        click.echo(f"  ?    {line}")
    if result.ok:
        click.echo(f"{result.suite}: OK, {result.compared} values and claims reproduce / hold")
    else:
        click.echo(f"{result.suite}: {len(result.problems)} problem(s), {len(result.undecided)} inconclusive, "
                   f"{len(result.passed)} of {result.compared} compared values and claims passed")
    sys.exit(result.exit_code(allow_inconclusive))


@click.command()
@click.argument("suite")
@click.option("--db", default=None, help=URL_HELP)
def plan(suite: str, db: str | None) -> None:
    """Seeds each cell of SUITE needs to be decided (80 % power at the suite's margin) and their compute.

    From the spread and difference measured in the database where a cell has results, else from
    the dataset's prior spread, assuming the paper is right; compute from the images/s of finished
    jobs of the same model, else from a named table of measured figures."""
    from rich.console import Console
    from rich.table import Table

    from benchmark.report.api import plan_suite, resolve_suites

    store = Store(db)
    (parsed,) = resolve_suites(store, [suite])
    rows = plan_suite(store, parsed)
    table = Table(title=f"{parsed.name}: seeds to decide each verdict (80 % power, α = 0.05)")
    for h in ("cell", "published", "spread (pp)", "verdict now", "seeds done / in suite", "seeds needed",
              "images/s", "hours for those seeds"):
        table.add_column(h, overflow="fold")
    sources: dict[str, None] = {}
    for r in rows:
        need = "exact" if r.verdict == "exact" else str(r.seeds_needed) if r.seeds_needed else "> 100 / none"
        table.add_row(r.label, r.published, f"{r.spread:.2f} {r.spread_source}" if r.spread == r.spread else r.spread_source,
                      r.verdict, f"{r.seeds_done} / {r.seeds_in_suite}", need, f"{r.images_per_second:.0f}",
                      f"{r.hours:.1f}" if r.hours == r.hours else "")
        sources.setdefault(r.speed_source, None)
    Console(width=200).print(table)
    total = sum(r.hours for r in rows if r.hours == r.hours)
    click.echo(f"total: {total:.1f} device-hours for the seeds needed (cells compared more than once counted once per "
               "comparison)")
    for s in sources:
        click.echo(f"images/s: {s}")
