"""``bench report`` and ``bench check``: thin click commands over benchmark.report.api.

Exit codes of ``bench check``: 0 all compared values within tolerance and all claims hold;
1 something is out, failed, diverged or unfinished (printed, with by how much); 2 usage error
(bad suite, bad database, bad option): `bench` turns every UserError into a message, never a traceback.
"""
from __future__ import annotations

import sys
import time

import click

from benchmark.report.aggregate import ReportError
from benchmark.report.render import FORMATS
from benchmark.store import URL_HELP, Store



@click.command()
@click.argument("suites", nargs=-1)
@click.option("--db", default=None, help=URL_HELP)
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS), default=("markdown",),
              show_default=True, help="Output format; repeat for several.")
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the reports; figures go to OUT/figures/.")
@click.option("--select", type=click.Choice(["final", "best_val", "best_test"]), default=None,
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
    from benchmark.report.api import build_tables, resolve_suites, write_reports

    t0 = time.perf_counter()
    store = Store(db)
    parsed = resolve_suites(store, suites)
    if not parsed:
        raise ReportError("no suites in the database; register one with `bench run SUITE` or name a suite file")
    results = build_tables(store, parsed, select)
    style = None
    if figures:
        from benchmark.report.style import FigureStyle  # matplotlib: only when drawing

        style = FigureStyle(band=band, seed_lines=seed_lines, dpi=dpi, vector=("svg", "pdf") if pdf else ("svg",))
    written = write_reports(results, out_dir, formats, figures=figures, style=style)
    for res in results:
        n_done = int((res.jobs["state"] == "done").sum())
        click.echo(f"{res.suite.name}: {n_done}/{len(res.jobs)} jobs done, {len(res.rows)} rows, "
                   f"{len(res.claims)} claims")
    for p in written:
        click.echo(f"wrote {p}")
    click.echo(f"report took {time.perf_counter() - t0:.2f} s")


@click.command()
@click.argument("suite")
@click.option("--db", default=None, help=URL_HELP)
@click.option("--select", type=click.Choice(["final", "best_val", "best_test"]), default=None,
              help="Override the suite's epoch selection (best_test only where the suite selects it).")
@click.option("-v", "--verbose", is_flag=True, help="Also list what passed.")
def check(suite: str, db: str | None, select: str | None, verbose: bool) -> None:
    """Exit 0 if SUITE's numbers are within tolerance and its claims hold, else 1 (2: usage error)."""
    from benchmark.report.api import check_suite, resolve_suites

    store = Store(db)
    (parsed,) = resolve_suites(store, [suite])
    result = check_suite(store, parsed, select)
    if verbose:
        for line in result.passed:
            click.echo(f"  ok   {line}")
    for line in result.problems:
        click.echo(f"  OUT  {line}")
    if result.ok:
        click.echo(f"{result.suite}: OK, {result.compared} values and claims within tolerance")
    else:
        click.echo(f"{result.suite}: {len(result.problems)} problem(s), "
                   f"{len(result.passed)} of {result.compared} compared values and claims passed")
    sys.exit(result.exit_code)
