"""The `bench` command line: thin wrappers that parse, call and print. The run engine (profile
overrides, register then work here or submit to Slurm) is ``benchmark.runner.api``; the reporter's is
``benchmark.report.api``."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchmark.errors import UserError
from benchmark.store import URL_HELP
from benchmark.report.cli import check, plan, report
from benchmark.suite import QUICK_ITERATIONS, QUICK_TRAIN_IMAGES, SuiteError, load_suite
from benchmark.suite import quick as quick_variant
from benchmark.vocabulary import BROKEN_STATES, TEST_ERROR, JobState

console = Console(stderr=True)


class BenchGroup(click.Group):
    """Turns every error a user can fix (``benchmark.errors.UserError``: a bad suite, profile, database,
    data folder, device list) into a message and exit code 2 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:  # Ctrl-C before the worker's own handler is installed (start-up)
            console.print("interrupted", highlight=False)
            sys.exit(130)


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
      bench check suites/smoke.toml             # exit 1 if a value differs or a claim fails, 3 if inconclusive
      bench plan suites/he2016_table.toml       # seeds each cell needs to be decided, and their compute
    """


def _store(db: str | None, *, create: bool = True):
    """The database of a command. Commands that only read (status, show, export, retry, prune,
    report, check) pass ``create=False``: they never create a database, and say when there is none."""
    from benchmark.store import Store

    return Store(db, create=create)


@main.command()
@click.argument("suites", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(suites: tuple[str, ...]) -> None:
    """Check suite files and print how many jobs each expands to."""
    failed = False
    for path in suites:
        try:
            suite = load_suite(path)
        except SuiteError as e:
            console.print(f"[red]✗[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            failed = True
            continue
        cells = len(suite.labels)
        click.echo(f"✓ {path}: suite '{suite.name}', {len(suite.jobs)} jobs in {cells} cells, "
                   f"{len(suite.published)} published values, {len(suite.claims)} claims")
    sys.exit(2 if failed else 0)


def _runner_options(f):
    """Options of `bench run` and `bench worker` that override the runner profile's keys."""
    options = [
        click.option("--runner", "runner_path", default=None, type=click.Path(dir_okay=False),
                     help="runner profile (TOML), e.g. runners/local.toml or runners/slurm.toml "
                          "[default: the built-in defaults, as in runners/local.toml]"),
        click.option("--devices", "--device", "devices", default=None,
                     help="auto (every visible GPU, else the CPU), cpu, cuda, or CUDA indices like 0,1 "
                          "[default: the profile's, auto]"),
        click.option("--jobs-per-device", type=click.IntRange(min=1), default=None,
                     help="jobs sharing one GPU [default: the profile's, 1]"),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="concurrent jobs on the CPU [default: the profile's, 1]"),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch CPU threads per job [default: the profile's; 0 there: (cores - 1) // concurrent "
                          "jobs, at least 1]. On a CPU the thread count changes the last bits of the results"),
        click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                     help="folder holding cifar-10-batches-py/ etc. [default: $BENCH_DATA, else ~/.cache/bench/data]"),
        click.option("--max-epochs", type=click.IntRange(min=1), default=None,
                     help="train at most N epochs of each job in this call; jobs stay queued and resume later"),
        click.option("--checkpoint-dir", default=None, type=click.Path(file_okay=False),
                     help="[default: the profile's, db/checkpoints]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False))
@click.option("--db", default=None, help=URL_HELP)
@_runner_options
@click.option("--quick", is_flag=True,
              help=f"plumbing check: every cell (first seed) for {QUICK_ITERATIONS} iterations on {QUICK_TRAIN_IMAGES} "
                   "images on this machine (never submitted to Slurm), into a throw-away database unless --db is given")
@click.option("--dry-run", is_flag=True, help="print the jobs this would run, and touch nothing")
@click.option("--replace", is_flag=True,
              help="the suite's name is registered with other jobs: register this text anyway; the registered "
                   "jobs it no longer has are kept as orphans (not trained or reported; `bench prune` deletes them)")
def run(suite_path: str, db: str | None, quick: bool, dry_run: bool, replace: bool, **runner) -> None:
    """Register SUITE's jobs in the database and train those not done yet.

    Jobs run in parallel, each in its own process, on the devices of the runner profile
    (runners/local.toml: every GPU, one job per GPU; else the CPU). With a profile that has a
    [slurm] table (runners/slurm.toml) the jobs are registered here and the work is submitted to
    Slurm as `bench worker` jobs. Finished jobs are never rerun; a job interrupted by Ctrl-C or a
    crash resumes from its last checkpoint on the next run.
    """
    suite = load_suite(suite_path)
    if quick:
        suite = quick_variant(suite)
    if dry_run:
        _print_jobs(suite)
        return
    if quick and db is None:
        with tempfile.TemporaryDirectory(prefix="bench-quick-") as tmp:
            runner["checkpoint_dir"] = str(Path(tmp) / "checkpoints")
            _run(suite, f"sqlite:///{tmp}/quick.sqlite", runner, local=True)
            _print_status(_store(f"sqlite:///{tmp}/quick.sqlite"), [suite.name])
        return
    _run(suite, db, runner, local=quick, replace=replace)


def _run(suite, db: str | None, runner: dict, local: bool = False, replace: bool = False) -> None:
    """Register ``suite`` and work its queue here, or submit workers to Slurm (profile with [slurm],
    unless ``local``: a quick run is a check of this machine's set-up). The engine: benchmark.runner.api."""
    from benchmark.runner import api

    profile, overrides = api.runner_profile(runner)
    if profile.slurm is None or local:
        from benchmark.runner.worker import job_context

        job_context()  # the job processes' fork server imports torch on another core meanwhile
    store = _store(db)
    reg = api.register(store, suite, replace=replace)
    click.echo(f"suite '{reg.suite}': {reg.jobs} jobs ({reg.added} new, {reg.present} already registered)")
    if reg.orphans:
        click.echo(f"{reg.orphans} registered job(s) of '{reg.suite}' are no longer in its text (orphans: not "
                   f"trained or reported); `bench prune {reg.suite} --yes` deletes them")
    if profile.slurm is not None and not local:
        jobs = api.submit(profile, store.url, [suite.name], overrides, console=console)
        click.echo(f"submitted {len(jobs)} `bench worker` job(s): {', '.join(str(j.job_id) for j in jobs)} "
                   f"(logs in {profile.slurm.log_dir}); follow them with `bench status --watch 10 --db {store.url}`")
        return
    result = api.work(store, profile, [suite.name], console=console)
    click.echo("jobs: " + result.summary)
    if result.paused:
        click.echo("some jobs were paused; run the same command again to continue them")
    if result.failed:
        click.echo(f"{len(result.failed)} job(s) ended failed or diverged: {', '.join(result.failed)}; "
                   f"`bench show JOB` says why, `bench retry {suite.name}` queues them again", err=True)
    if result.code:
        sys.exit(result.code)


@main.command()
@click.option("--db", default=None, help=URL_HELP)
@click.option("--suite", "suites", multiple=True, help="only jobs of this suite (repeatable) [default: every suite]")
@click.option("--wait", is_flag=True, help="when the queue is empty, keep polling for new jobs instead of exiting")
@_runner_options
def worker(db: str | None, suites: tuple[str, ...], wait: bool, **runner) -> None:
    """Train queued jobs of every registered suite (or of --suite) until the queue is empty.

    Any number of workers may share one database: on one host they share the device slots (file
    locks), and several hosts share a PostgreSQL database. Ctrl-C stops the jobs at their next step
    and puts them back in the queue; exit code 130 (143 for SIGTERM).
    """
    from benchmark.runner.api import runner_profile
    from benchmark.runner.worker import run_worker

    profile, _ = runner_profile(runner)
    store = _store(db)
    outcomes, code = run_worker(store, profile, list(suites) or None, wait=wait, console=console)
    click.echo("this worker: " + (", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "no jobs"))
    sys.exit(code)


def _print_jobs(suite) -> None:
    from rich import box

    table = Table(title=escape(f"{suite.name}: {len(suite.jobs)} jobs (dry run: nothing registered or trained)"),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("label", no_wrap=True)
    for name in ("seed", "key", "model", "data", "schedule", "batch", "lr"):
        table.add_column(name, overflow="fold")
    for job in suite.jobs:
        m, d, s, o = job.spec.model, job.spec.data, job.spec.schedule, job.spec.optim
        scale = "" if m.residual_scale == "none" else f" {m.residual_scale}" + (f"={m.tau:.3g}" if m.tau else "")
        model = f"{m.depth} {m.block}/{m.order}/{m.shortcut}{scale}" + (" no-BN" if m.norm == "none" else "")
        warmup = "" if s.warmup == "none" else f" +{s.warmup}"
        table.add_row(escape(job.label), str(job.seed), job.key[:8], model, d.dataset,
                      f"{s.length} {'it' if s.unit == 'iteration' else 'ep'}{warmup}", str(o.batch_size), f"{o.lr:g}")
    Console().print(table)


@main.command()
@click.option("--db", default=None, help=URL_HELP)
@click.option("--suite", "suites", multiple=True, help="only this suite (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="refresh the table every SECONDS until Ctrl-C")
def status(db: str | None, suites: tuple[str, ...], fmt: str, watch: float | None) -> None:
    """List jobs: state, epochs done of all, last test error, ETA, attempts, worker, device."""
    from benchmark.runner.status import status_frame, status_table, summary
    from benchmark.store import NotFound, display_url

    store = _store(db, create=False)
    registered = {s["name"] for s in store.suites()}
    unknown = [s for s in suites if s not in registered]
    if unknown:
        raise NotFound(f"no suite named {', '.join(map(repr, unknown))} in {display_url(store.url)}; registered: "
                       f"{', '.join(sorted(registered)) or 'none'}")
    frame = status_frame(store, list(suites) or None)
    if fmt == "json":
        columns = ["job_id", "suite", "label", "seed", "state", "epochs_done", "epochs", TEST_ERROR, "eta_s",
                   "attempts", "worker", "slurm_job", "device", "key", "error", "code_version"]
        records = json.loads(frame[columns].to_json(orient="records"))
        for rec, env in zip(records, frame["environment"]):
            rec["environment"] = json.loads(env) if isinstance(env, str) else None
        click.echo(json.dumps(records, indent=2))
        return
    if frame.empty and not watch:
        click.echo("no jobs in the database; register some with `bench run SUITE`")
        return
    if not watch:
        _print_status(store, list(suites) or None, frame)
        return
    import time

    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def view():
        f = status_frame(store, list(suites) or None)
        return Group(status_table(f, title=f"bench status ({time.strftime('%H:%M:%S')}, every {watch:g} s, "
                                              "Ctrl-C to stop)"), Text(summary(f)))

    try:
        with Live(view(), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--db", default=None, help=URL_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--diff", "with_diff", is_flag=True, help="also print the uncommitted diff the job ran with")
def show(job_id: int, db: str | None, fmt: str, with_diff: bool) -> None:
    """Everything about one job (its id, as `bench status` lists): config, environment, code
    version and diff, attempts, the last error and the end of its log."""
    from benchmark.runner.show import details_text, job_details

    details = job_details(_store(db, create=False), job_id)
    click.echo(json.dumps(details, indent=2, default=str) if fmt == "json" else details_text(details, with_diff))


def _print_status(store, suites, frame=None) -> None:
    from benchmark.runner.status import status_frame, status_table, summary

    frame = status_frame(store, suites) if frame is None else frame
    Console().print(status_table(frame))
    click.echo(summary(frame))


@main.command()
@click.option("--db", default=None, help=URL_HELP)
@click.option("--suite", "suites", multiple=True, help="only this suite (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default=None,
              help="a table file: long (job, epoch, metric) for csv/json, wide (job, epoch) for parquet")
@click.option("--wide/--long", default=None, help="one row per job and epoch / per job, epoch and metric")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="file to write [default: stdout]")
@click.option("--to", "to", type=click.Choice(["mlflow", "tensorboard"]), default=None,
              help="log every job as a run of an experiment tracker instead")
@click.option("--tracking-uri", default=None, help="--to mlflow: e.g. sqlite:///mlflow.db [default: MLflow's own]")
@click.option("--experiment", default=None, help="--to mlflow: one experiment for all [default: one per suite]")
@click.argument("log_dir", required=False, type=click.Path(file_okay=False))
def export(db: str | None, suites: tuple[str, ...], fmt: str | None, wide: bool | None, out: str | None,
           to: str | None, tracking_uri: str | None, experiment: str | None, log_dir: str | None) -> None:
    """Per-epoch metrics with each job's config, state and environment as columns (--format), or
    every job as an MLflow or TensorBoard run (--to mlflow, --to tensorboard LOG_DIR)."""
    from benchmark.report import export as ex

    if (fmt is None) == (to is None):
        raise ex.ExportError("give one of --format csv|json|parquet or --to mlflow|tensorboard")
    if to == "tensorboard" and not log_dir:
        raise ex.ExportError("--to tensorboard needs the log directory: bench export --to tensorboard DIR")
    if log_dir and to != "tensorboard":
        raise ex.ExportError(f"unexpected argument {log_dir!r} (only --to tensorboard takes a directory)")
    store = _store(db, create=False)
    if to == "mlflow":
        click.echo(str(ex.to_mlflow(store, suites, tracking_uri, experiment)), err=True)
        return
    if to == "tensorboard":
        click.echo(str(ex.to_tensorboard(store, suites, log_dir)), err=True)
        return
    frame = ex.export_frame(store, suites, wide=fmt == "parquet" if wide is None else wide)
    text = ex.write_frame(frame, fmt, out)
    if out:
        click.echo(f"wrote {len(frame)} rows to {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("suite")
@click.option("--db", default=None, help=URL_HELP)
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in (*BROKEN_STATES, JobState.DONE)]),
              default=[s.value for s in BROKEN_STATES], show_default=True,
              help="which jobs to queue again (repeatable)")
def retry(suite: str, db: str | None, states: tuple[str, ...]) -> None:
    """Queue SUITE's failed (and diverged) jobs again, with a fresh attempt count.

    They resume from their last epoch checkpoint on the next `bench run` or `bench worker`; their
    recorded epochs stay until overwritten.
    """
    n = _store(db, create=False).reset_jobs(suite, states)
    click.echo(f"{n} job(s) of '{suite}' queued again; run `bench run` or `bench worker` to train them")


@main.command()
@click.argument("suite")
@click.option("--db", default=None, help=URL_HELP)
@click.option("--yes", is_flag=True, help="delete them; without it, only list what would be deleted")
def prune(suite: str, db: str | None, yes: bool) -> None:
    """Delete SUITE's orphaned jobs, with their metrics: the jobs its registered text no longer has
    (after `bench run --replace`). Without --yes, list them and delete nothing."""
    rows = _store(db, create=False).prune_orphans(suite, dry_run=not yes)
    for job_id, label, seed, state in rows:
        click.echo(f"job {job_id}: {label} seed {seed} ({state})")
    if not rows:
        click.echo(f"'{suite}' has no orphaned jobs")
    elif yes:
        click.echo(f"deleted {len(rows)} orphaned job(s) of '{suite}' and their metrics")
    else:
        click.echo(f"{len(rows)} orphaned job(s); run again with --yes to delete them and their metrics")


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
@click.option("--db", "url", default=None, help=URL_HELP)
def upgrade(url: str | None) -> None:
    """Apply schema migrations (run once, before starting workers)."""
    from benchmark.store import upgrade as upgrade_db

    before, after = upgrade_db(url)
    if before == after:
        click.echo(f"database schema is up to date (revision {after})")
    else:
        click.echo(f"database schema upgraded from revision {before or 'none (new database)'} to {after}")


@db.command(name="status")
@click.option("--db", "url", default=None, help=URL_HELP)
def db_status(url: str | None) -> None:
    """Print the database's schema revision and whether it needs `bench db upgrade`."""
    from benchmark.store import schema_revision

    current, head = schema_revision(url)
    if current == head:
        click.echo(f"schema revision {current}: up to date")
    else:
        click.echo(f"schema revision {current or 'none (no database yet)'}, this bench needs {head}: "
                   "run `bench db upgrade`")
        sys.exit(1)


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
main.add_command(plan)

if __name__ == "__main__":
    main()
