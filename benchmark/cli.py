"""The `bench` command line: thin wrappers that parse, call and print."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmark.report.cli import check, report
from benchmark.suite import QUICK_ITERATIONS, QUICK_TRAIN_IMAGES, SuiteError, load_suite
from benchmark.suite import quick as quick_variant

DB_HELP = "SQLAlchemy URL of the results database [default: sqlite:///db/results.sqlite]"
console = Console(stderr=True)


class BenchGroup(click.Group):
    """Turns the errors a user can cause (a bad suite, database or data folder) into a message and
    exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        from benchmark.data import DataError
        from benchmark.store import StoreError

        try:
            return super().invoke(ctx)
        except (SuiteError, StoreError, DataError) as e:
            console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
            sys.exit(2)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bench")
def main() -> None:
    """bench: reproduce residual-network results on CIFAR.

    \b
    Typical session:
      bench validate suites/he2016_table.toml   # check a suite, count its jobs
      bench run suites/smoke.toml               # train every job, metrics into db/results.sqlite
      bench status                              # what is queued, running, done
      bench report --format html                # tables, curves and claims into reports/
      bench check suites/smoke.toml             # exit 1 if a number or claim is out of tolerance
    """


def _store(db: str | None):
    from benchmark.store import Store

    return Store(db)


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine; use --device cpu", param_hint="--device")
    return device


@main.command()
@click.argument("suites", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(suites: tuple[str, ...]) -> None:
    """Check suite files and print how many jobs each expands to."""
    failed = False
    for path in suites:
        try:
            suite = load_suite(path)
        except SuiteError as e:
            console.print(f"[red]✗[/red] {e}", highlight=False)
            failed = True
            continue
        cells = len(suite.labels)
        click.echo(f"✓ {path}: suite '{suite.name}', {len(suite.jobs)} jobs in {cells} cells, "
                   f"{len(suite.published)} published values, {len(suite.claims)} claims")
    sys.exit(2 if failed else 0)


@main.command()
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False))
@click.option("--db", default=None, help=DB_HELP)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="folder holding cifar-10-batches-py/ etc. [default: $BENCH_DATA, else ~/.cache/bench/data]")
@click.option("--max-epochs", type=click.IntRange(min=1), default=None,
              help="train at most N epochs of each job in this call; jobs stay queued and resume later")
@click.option("--checkpoint-dir", default="db/checkpoints", show_default=True, type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True,
              help=f"plumbing check: every cell (first seed) for {QUICK_ITERATIONS} iterations on {QUICK_TRAIN_IMAGES} "
                   "images, into a throw-away database unless --db is given")
@click.option("--dry-run", is_flag=True, help="print the jobs this would run, and touch nothing")
def run(suite_path: str, db: str | None, device: str, data_dir: str | None, max_epochs: int | None,
        checkpoint_dir: str, quick: bool, dry_run: bool) -> None:
    """Register SUITE's jobs in the database and train those not done yet.

    Finished jobs are never rerun; a job interrupted by Ctrl-C or a crash resumes from its last
    checkpoint on the next run.
    """
    suite = load_suite(suite_path)
    if quick:
        suite = quick_variant(suite)
    if dry_run:
        _print_jobs(suite)
        return
    if quick and db is None:
        with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
            _run(suite, f"sqlite:///{tmp}/quick.sqlite", device, data_dir, max_epochs, Path(tmp) / "checkpoints")
            _print_status(_store(f"sqlite:///{tmp}/quick.sqlite").jobs_frame([suite.name]))
        return
    _run(suite, db, device, data_dir, max_epochs, Path(checkpoint_dir))


def _run(suite, db: str | None, device: str, data_dir: str | None, max_epochs: int | None, checkpoint_dir: Path) -> None:
    from benchmark.runner.job import JobOptions
    from benchmark.runner.sequential import run_sequential

    store = _store(db)
    added, present = store.register_suite(suite)
    click.echo(f"suite '{suite.name}': {len(suite.jobs)} jobs ({added} new, {present} already registered)")
    options = JobOptions(device=_device(device), data_dir=data_dir, checkpoint_dir=checkpoint_dir,
                         max_epochs=max_epochs)
    outcomes = run_sequential(store, [suite.name], options)
    counts = store.jobs_frame([suite.name]).state.value_counts().to_dict()
    click.echo("jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    if outcomes.get("released"):
        click.echo("some jobs were paused; run the same command again to continue them")


def _print_jobs(suite) -> None:
    table = Table("label", "seed", "key", "model", "data", "schedule", "batch", "lr",
                  title=f"{suite.name}: {len(suite.jobs)} jobs (dry run: nothing registered or trained)")
    for job in suite.jobs:
        m, d, s, o = job.spec.model, job.spec.data, job.spec.schedule, job.spec.optim
        scale = "" if m.residual_scale == "none" else f" {m.residual_scale}" + (f"={m.tau:.3g}" if m.tau else "")
        model = f"{m.depth} {m.block} {m.order} {m.shortcut}{scale}" + (" no-BN" if m.norm == "none" else "")
        warmup = "" if s.warmup == "none" else f" +warmup {s.warmup}"
        table.add_row(job.label, str(job.seed), job.key, model, d.dataset,
                      f"{s.length} {s.unit}s{warmup}", str(o.batch_size), f"{o.lr:g}")
    Console().print(table)


@main.command()
@click.option("--db", default=None, help=DB_HELP)
@click.option("--suite", "suites", multiple=True, help="only this suite (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(db: str | None, suites: tuple[str, ...], fmt: str) -> None:
    """List jobs with their state and epochs done."""
    frame = _store(db).jobs_frame(list(suites) or None)
    if fmt == "json":
        columns = ["job_id", "suite", "label", "seed", "state", "epochs_done", "attempts", "worker", "device",
                   "key", "error"]
        click.echo(frame[columns].to_json(orient="records", indent=2))
        return
    if frame.empty:
        click.echo("no jobs in the database; register some with `bench run SUITE`")
        return
    _print_status(frame)


STATE_STYLE = {"done": "green", "running": "cyan", "queued": "", "diverged": "yellow", "failed": "red"}


def _print_status(frame) -> None:
    table = Table("suite", "label", "seed", "state", "epochs", "attempts", "worker", "device")
    for row in frame.itertuples():
        table.add_row(row.suite, row.label, str(row.seed), f"[{STATE_STYLE[row.state]}]{row.state}",
                      str(row.epochs_done), str(row.attempts), str(row.worker or ""), str(row.device or ""))
    Console().print(table)
    counts = frame.state.value_counts().to_dict()
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


@main.command()
@click.option("--db", default=None, help=DB_HELP)
@click.option("--suite", "suites", multiple=True, help="only this suite (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="file to write [default: stdout]")
def export(db: str | None, suites: tuple[str, ...], fmt: str, out: str | None) -> None:
    """Write per-epoch metrics in long form: one row per job, epoch and metric."""
    frame = _store(db).metrics_frame(list(suites) or None)
    columns = ["suite", "key", "label", "seed", "epoch", "name", "value"]
    frame = frame[columns]
    text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1)
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {len(frame)} rows to {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def models(fmt: str) -> None:
    """List every registered architecture with its parameter count."""
    from benchmark.models import list_models

    rows = list_models()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "depth", "block", "order", "shortcut", "residual scale", "params")
    for r in rows:
        table.add_row(r["name"], str(r["depth"]), r["block"], r["order"], r["shortcut"], r["residual_scale"],
                      f"{r['params']:,} ({r['params'] / 1e6:.2f}M)")
    Console().print(table)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.option("--db", "url", default=None, help=DB_HELP)
def upgrade(url: str | None) -> None:
    """Apply schema migrations (run once, before starting workers)."""
    from benchmark.store import upgrade as upgrade_db

    upgrade_db(url)
    click.echo("database schema is up to date")


@main.group()
def data() -> None:
    """Datasets."""


@data.command()
@click.argument("dataset", type=click.Choice(["cifar10", "cifar100", "cifar10-binary"]))
@click.option("--data-dir", default=None, type=click.Path(file_okay=False))
def download(dataset: str, data_dir: str | None) -> None:
    """Download an official CIFAR archive, verify its MD5 and unpack it."""
    from benchmark.data import download as fetch

    path = fetch(dataset, data_dir, progress=True)
    click.echo(f"{dataset} is ready in {path}")


main.add_command(report)
main.add_command(check)

if __name__ == "__main__":
    main()
