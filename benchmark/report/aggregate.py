"""From a suite and two long DataFrames (jobs, per-epoch metrics) to the comparison table.

Pure pandas, no database and no files: the store hands over ``jobs_frame`` / ``metrics_frame``,
and the tests hand-make them. Vectorised on purpose: a report over 1,000 jobs x 200 epochs x
8 metrics must stay well under a second here.

Vocabulary: a *cell* is every job of a suite with the same label (they differ only by seed);
the *selected epoch* of a job is where its reported value is read (Suite.select).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from benchmark.claims import ClaimPending, ClaimResult, claim_metrics, evaluate_claim
from benchmark.config import RuntimeConfig
from benchmark.errors import UserError
from benchmark.suite_types import Published, Suite
from benchmark.vocabulary import (ITERATIONS, SELECTION_METRIC, TEST_ERROR, TRAIN_ERROR, TRAINED_STATES, JobState,
                                  is_scale_metric)

# A cell shows the first of these states that any of its jobs is in: trouble first, then work
# still to do. Only a cell whose jobs are all done shows numbers.
MISSING = "missing"  # a cell state, not a job state: the suite expects a job the database does not have
STATE_ORDER = (JobState.FAILED, JobState.DIVERGED, JobState.RUNNING, JobState.QUEUED, MISSING, JobState.DONE)
UNFINISHED = (JobState.RUNNING, JobState.QUEUED, MISSING)

KIND_TEXT = {
    "single": "single run",
    "best_of": "best of {runs}",
    "mean_std": "mean±std of {runs}",
    "median_of": "median of {runs}",
    "chart_reading": "chart reading",
    "derived": "derived",
    "expected": "reference run",
}

SELECT_TEXT = {
    "final": "final epoch",
    "best_val": "epoch with the lowest validation error (val_error); test error read at that epoch",
    "best_test": "epoch with the lowest TEST error: selected on the test set, as the suite's source "
    "does; optimistic, not comparable with final-epoch numbers",
}

# Config fields that never count as a protocol difference: the label already says them.
_NOT_PROTOCOL = {"seed", "model.depth", "model.stages", "model.num_classes"}
# The runtime can change the numbers (bf16 autocast does; on a CPU even channels_last moves the last
# bits), and the papers trained in fp32: a cell run at anything but these defaults says so in its
# protocol column even when every cell of the suite shares it.
_RUNTIME_DEFAULTS = {f"runtime.{k}": v for k, v in asdict(RuntimeConfig()).items()}


class ReportError(UserError, ValueError):
    """A report that cannot be made as asked (for example, selecting on the test set)."""


# ----------------------------------------------------------------------------------------------
# Epoch selection


def resolve_select(suite: Suite, override: str | None = None) -> str:
    """The epoch-selection rule for ``suite``; test-set selection only where the suite asks for it."""
    select = override or suite.select
    if select not in SELECT_TEXT:
        raise ReportError(f"unknown selection {select!r}; use one of {', '.join(SELECT_TEXT)}")
    if select == "best_test" and suite.select != "best_test":
        raise ReportError(
            f"suite {suite.name!r} selects {suite.select!r}: selecting the reported epoch on the test set "
            "(best_test) is allowed only when the suite itself says select = \"best_test\""
        )
    if select == "best_val":
        no_val = sorted({j.label for j in suite.jobs if j.spec.data.val_size <= 0})
        if no_val:
            raise ReportError(
                f"suite {suite.name!r}: best_val selection needs a validation split (data.val_size > 0); "
                f"cells without one: {', '.join(no_val)}"
            )
    return select


def select_epochs(metrics: pd.DataFrame, select: str) -> pd.Series:
    """job_id -> the epoch whose values are reported (ties: the earliest epoch)."""
    if metrics.empty:
        return pd.Series(dtype="float64", name="epoch")
    if select == "final":
        return metrics.groupby("job_id")["epoch"].max().rename("epoch")
    name = SELECTION_METRIC[select]
    m = metrics[(metrics["name"] == name) & metrics["value"].notna()]
    m = m.sort_values(["job_id", "value", "epoch"], kind="mergesort")
    return m.drop_duplicates("job_id").set_index("job_id")["epoch"].rename("epoch")


def values_at(metrics: pd.DataFrame, epochs: pd.Series) -> pd.Series:
    """(job_id, name) -> value at the given epoch of each job."""
    if metrics.empty or epochs.empty:
        return pd.Series(dtype="float64", index=pd.MultiIndex.from_arrays([[], []], names=["job_id", "name"]))
    sel = epochs.reset_index()
    m = metrics.merge(sel, on=["job_id", "epoch"], how="inner")
    return m.set_index(["job_id", "name"])["value"]


# ----------------------------------------------------------------------------------------------
# Which metrics the report reads


def x_axis(suite: Suite) -> str:
    """The curves' x-axis: "iterations" for iteration-scheduled suites (the cumulative
    ``iterations`` metric), "epoch" otherwise."""
    units = {j.spec.schedule.unit for j in suite.jobs}
    return ITERATIONS if units == {"iteration"} else "epoch"


def metrics_needed(suite: Suite, select: str, recorded: Iterable[str]) -> list[str]:
    """The names, out of those ``recorded`` in the database, that the report of ``suite`` reads.

    A run records ~8 metrics per epoch and the report reads 2 or 3 of them: loading only those
    is most of what makes a report over 1,000 x 200-epoch jobs quick. Readers: the tables
    (test_error, published metrics), the claims (their metric arguments), the epoch selection
    (val_error / test_error), the error curves (test_error, train_error; iterations for the
    x-axis) and the α / τ curves (alpha.*, tau)."""
    want = {TEST_ERROR, TRAIN_ERROR}
    want |= {p.metric for p in suite.published}
    for c in suite.claims:
        want |= claim_metrics(c.expr)
    if select in SELECTION_METRIC:
        want.add(SELECTION_METRIC[select])
    if x_axis(suite) == ITERATIONS:
        want.add(ITERATIONS)
    return [n for n in recorded if n in want or is_scale_metric(n)]


# ----------------------------------------------------------------------------------------------
# Expected jobs and their states


def expected_jobs(suite: Suite, jobs: pd.DataFrame | None) -> pd.DataFrame:
    """One row per job the suite expects, with its database state ("missing" if never registered)."""
    exp = pd.DataFrame(
        {
            "label": [j.label for j in suite.jobs],
            "key": [j.key for j in suite.jobs],
            "seed": [j.seed for j in suite.jobs],
        }
    )
    # device ... finished_at: for the HTML report's per-seed drill-down (report/html.py)
    cols = ["job_id", "state", "epochs_done", "error", "code_version", "environment", "device", "worker",
            "attempts", "started_at", "finished_at"]
    if jobs is None or jobs.empty:
        for c in cols:
            exp[c] = None
        exp["state"] = MISSING
        return exp
    j = jobs
    if "suite" in j.columns and (j["suite"] == suite.name).any():
        j = j[j["suite"] == suite.name]
    have = [c for c in cols if c in j.columns]
    j = j.drop_duplicates("key", keep="last")[["key", *have]]
    exp = exp.merge(j, on="key", how="left")
    for c in cols:
        if c not in exp.columns:
            exp[c] = None
    exp["state"] = exp["state"].fillna(MISSING)
    return exp


def cell_state(states: Iterable[str]) -> tuple[str, str]:
    """(state, text) of a cell from its jobs' states, e.g. ("running", "running (2/3 done)")."""
    counts = Counter(states)
    n = sum(counts.values())
    state = str(next((s for s in STATE_ORDER if counts.get(s)), MISSING))  # a plain str, as stored
    if state == JobState.DONE:
        return state, "done"
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s) and s != JobState.DONE]
    text = state if counts[state] == n else f"{state} ({', '.join(parts)}; {counts.get(JobState.DONE, 0)}/{n} done)"
    return state, text


# ----------------------------------------------------------------------------------------------
# Protocol differences between cells


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def protocol_notes(suite: Suite) -> dict[str, str]:
    """label -> "field=value; ..." for the config fields where a cell departs from the suite's
    usual value (the most common one across cells; ties go to the first cell), then the runtime
    fields where it departs from the defaults (fp32, NCHW, eager)."""
    first: dict[str, dict[str, Any]] = {}
    for j in suite.jobs:
        if j.label not in first:  # not setdefault: flattening every seed's spec costs 0.1 s per 200 jobs
            first[j.label] = _flatten(j.spec.to_dict())
    notes: dict[str, list[str]] = {label: [] for label in first}
    keys = [k for k in next(iter(first.values()), {}) if k not in _NOT_PROTOCOL and k not in _RUNTIME_DEFAULTS]
    if len(first) < 2:
        keys = []  # one cell departs from nothing
    leaf_count = Counter(k.rsplit(".", 1)[-1] for k in keys)
    for k in keys:
        vals = [cfg.get(k) for cfg in first.values()]
        if len(set(map(repr, vals))) == 1:
            continue
        counts = Counter(map(repr, vals))
        top = max(counts.values())
        usual = next(repr(v) for v in vals if counts[repr(v)] == top)
        leaf = k.rsplit(".", 1)[-1]
        name = leaf if leaf_count[leaf] == 1 else k
        for label, cfg in first.items():
            if repr(cfg.get(k)) != usual:
                notes[label].append(f"{name}={_fmt_value(cfg.get(k))}")
    for label, cfg in first.items():
        notes[label] += [f"{k.rsplit('.', 1)[-1]}={_fmt_value(cfg.get(k))}" for k, default in _RUNTIME_DEFAULTS.items()
                         if cfg.get(k, default) != default]
    return {label: "; ".join(v) for label, v in notes.items()}


# ----------------------------------------------------------------------------------------------
# Published values


def published_text(p: Published) -> str:
    """e.g. "6.43 (best of 5; 6.61±0.16)", "≈ 13.5 (chart reading)"."""
    kind = KIND_TEXT.get(p.kind, p.kind).format(runs=p.runs if p.runs else "N")
    extra = []
    if p.kind == "mean_std" and p.std is not None:
        value = f"{p.value:g}±{p.std:g}"
    else:
        value = f"{p.value:g}"
        if p.mean is not None and p.std is not None:
            extra.append(f"{p.mean:g}±{p.std:g}")
        elif p.mean is not None:
            extra.append(f"mean {p.mean:g}")
    approx = "≈ " if (p.approx or p.kind == "chart_reading") else ""
    return f"{approx}{value} ({'; '.join([kind, *extra])})"


# ----------------------------------------------------------------------------------------------
# The suite's results


ROW_FIELDS = (
    "suite", "label", "state", "state_text", "n", "n_expected", "metric", "select",
    "mean", "std", "best", "published", "published_kind", "published_runs", "published_text",
    "approx", "statistic", "estimate", "low", "high", "diff", "diff_low", "diff_high", "se", "df",
    "tolerance", "p_equivalence", "p_difference", "verdict", "seeds_needed", "prior", "protocol",
    "source", "note",
)
# low/high: the measured statistic's 95 % interval (a prediction interval for one-run kinds);
# diff_low/diff_high: the 90 % CI of diff (reproduces iff inside ±tolerance, the margin). See stats.py.
# verdict: reproduces | differs | inconclusive (seeds_needed: seeds for 80 % power) | pending
# (jobs unfinished) | broken (failed or diverged jobs, or no value) | plumbing (a --quick run) | ""
# (nothing published for the cell).
VERDICTS = ("reproduces", "differs", "inconclusive", "pending", "broken", "plumbing")


@dataclass
class SuiteResults:
    """Everything the renderers and the check need for one suite; also the claims' lookup."""

    suite: Suite
    select: str
    jobs: pd.DataFrame  # expected jobs with state and job_id
    metrics: pd.DataFrame  # long form, this suite's jobs only
    selected_epoch: pd.Series  # job_id -> the epoch whose values are reported
    at_selected: pd.Series  # (job_id, name) -> value
    at_last: pd.Series  # (job_id, name) -> value
    best_over_epochs: pd.Series  # (job_id, name) -> min over epochs
    cells: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (state, text)
    records: list[dict[str, Any]] = field(default_factory=list)  # the table rows, ROW_FIELDS each
    claims: list[tuple[Any, ClaimResult]] = field(default_factory=list)
    database: str = ""  # where the results came from (URL, password hidden), for the report header

    def __post_init__(self) -> None:
        # label -> [(job_id, state)] in job order, built once: every table row and claim asks for
        # a cell's jobs, and a pandas filter per ask cost more than the rest of summarize.
        self._jobs_of: dict[str, list[tuple[Any, str]]] = {}
        self._seeds_of: dict[str, list[tuple[int, Any, str]]] = {}
        j = self.jobs
        for label, seed, job_id, state in zip(j["label"].tolist(), j["seed"].tolist(), j["job_id"].tolist(),
                                              j["state"].tolist()):
            self._jobs_of.setdefault(label, []).append((job_id, state))
            self._seeds_of.setdefault(label, []).append((seed, job_id, state))
        self._values: dict[tuple[Any, str], float] | None = None
        self._epochs: dict[Any, float] = {}

    @property
    def rows(self) -> pd.DataFrame:
        """The table rows as a DataFrame (object dtype, so missing stays None)."""
        return pd.DataFrame(self.records, columns=list(ROW_FIELDS), dtype=object)

    # -- per-seed values of a cell ---------------------------------------------------------------
    def job_ids(self, label: str, states: tuple[str, ...] = TRAINED_STATES) -> list[Any]:
        return [i for i, s in self._jobs_of.get(label, []) if s in states]

    def _seed_values(self, series: pd.Series, label: str, metric: str) -> np.ndarray:
        ids = self.job_ids(label)
        out = []
        for i in ids:
            v = series.get((i, metric), math.nan)
            out.append(float(v) if v is not None else math.nan)
        return np.asarray(out, dtype=float)

    def _require_finished(self, label: str) -> None:
        if label not in self.cells:
            raise ClaimPending(f"no cell {label!r} in suite {self.suite.name!r}")
        state, text = self.cells[label]
        states = {s for _, s in self._jobs_of.get(label, [])}
        # A diverged run is a result (its values, NaN included, count); a failed one is not.
        if states & {*UNFINISHED, JobState.FAILED}:
            raise ClaimPending(f"{label}: {text}")

    # -- the claims' Lookup protocol: per-seed samples (claims test them, benchmark.claims) --
    def selected(self, label: str, metric: str = TEST_ERROR) -> np.ndarray:
        """Per-seed values at the suite's selected epoch."""
        self._require_finished(label)
        return self._seed_values(self.at_selected, label, metric)

    final = selected  # the old name, still read by claims stored before the rename

    def best(self, label: str, metric: str = TEST_ERROR) -> np.ndarray:
        self._require_finished(label)
        return self._seed_values(self.best_over_epochs, label, metric)

    def std(self, label: str, metric: str = TEST_ERROR) -> float:
        self._require_finished(label)
        v = self._seed_values(self.at_selected, label, metric)
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 if len(v) == 1 else math.nan

    def last(self, label: str, metric: str = TEST_ERROR) -> np.ndarray:
        self._require_finished(label)
        return self._seed_values(self.at_last, label, metric)

    def epoch_reaching(self, label: str, metric: str, threshold: float) -> np.ndarray:
        self._require_finished(label)
        ids = self.job_ids(label)
        if not ids:
            return np.asarray([], dtype=float)
        m = self.metrics
        m = m[m["job_id"].isin(ids) & (m["name"] == metric) & (m["value"] <= threshold)]
        first = m.groupby("job_id")["epoch"].min()
        return np.asarray([first.get(i, math.inf) for i in ids], dtype=float)

    # -- per-seed rows of the exports ------------------------------------------------------------
    def seed_rows(self, label: str, metric: str) -> list[dict[str, Any]]:
        """One dict per expected job of the cell: seed, job id, state, selected epoch, value."""
        if self._values is None:  # built once: the exports ask for every cell's seeds
            self._values = self.at_selected.to_dict()
            self._epochs = self.selected_epoch.to_dict()
        out = []
        for seed, job_id, state in self._seeds_of.get(label, []):
            known = job_id is not None and job_id == job_id  # NaN: never registered
            value = self._values.get((job_id, metric)) if known and state in TRAINED_STATES else None
            out.append({"seed": int(seed), "job_id": _nan_to_none(job_id) if known else None, "state": state,
                        "epoch": _nan_to_none(self._epochs.get(job_id)) if known else None,
                        "value": _nan_to_none(value)})
        return out


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, (float, np.floating)) and not math.isfinite(v):
        return None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def summarize(
    suite: Suite, jobs: pd.DataFrame | None, metrics: pd.DataFrame | None, select: str | None = None
) -> SuiteResults:
    """Aggregate one suite: per-job selected values, per-cell mean/std/n/best, verdicts, claims."""
    select = resolve_select(suite, select)
    exp = expected_jobs(suite, jobs)
    ids = exp["job_id"].dropna().tolist()
    if metrics is None or metrics.empty:
        m = pd.DataFrame(columns=["job_id", "epoch", "name", "value"])
    else:
        m = metrics[metrics["job_id"].isin(ids)][["job_id", "epoch", "name", "value"]]
    m = m.astype({"epoch": "int64", "value": "float64"}) if not m.empty else m
    selected = select_epochs(m, select)
    last = select_epochs(m, "final")
    res = SuiteResults(
        suite=suite,
        select=select,
        jobs=exp,
        metrics=m,
        selected_epoch=selected,
        at_selected=values_at(m, selected),
        at_last=values_at(m, last),
        best_over_epochs=(m.groupby(["job_id", "name"])["value"].min() if not m.empty else pd.Series(dtype=float)),
    )
    for label, g in exp.groupby("label", sort=False):
        res.cells[label] = cell_state(g["state"])
    notes = protocol_notes(suite)
    dataset = {j.label: j.spec.data.dataset for j in suite.jobs}
    published: dict[str, list[Published]] = {}
    for p in _with_printed_means(suite.published):
        published.setdefault(p.label, []).append(p)

    rows = []
    for label in suite.labels:
        state, state_text = res.cells[label]
        n_expected = int((exp["label"] == label).sum())
        for p in published.get(label) or [None]:
            metric = p.metric if p is not None else TEST_ERROR
            row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
            row.update(
                suite=suite.name, label=label, state=state, state_text=state_text, n_expected=n_expected,
                metric=metric, select=select, protocol=notes.get(label, ""), n=0, verdict="", note="",
            )
            if p is not None:
                row.update(
                    published=p.value, published_kind=p.kind, published_runs=p.runs,
                    published_text=published_text(p), approx=bool(p.approx or p.kind == "chart_reading"),
                    tolerance=p.tolerance if p.tolerance is not None else suite.tolerance,
                    source=p.source, note=p.note,
                )
            if state == JobState.DONE:
                v = res._seed_values(res.at_selected, label, metric)
                v = v[~np.isnan(v)]
                row["n"] = int(len(v))
                if len(v):
                    row["mean"] = float(np.mean(v))
                    row["std"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
                    row["best"] = float(np.min(v))
                if p is not None:
                    if row["mean"] is None:
                        row["verdict"] = "broken"
                        row["note"] = f"no {metric} recorded at the selected epoch; " + (row["note"] or "")
                    else:
                        _add_comparison(row, p, v, dataset.get(label), plumbing=suite.quick)
            elif p is not None:
                row["verdict"] = "pending" if state in UNFINISHED else "broken"
            rows.append({k: _nan_to_none(v) for k, v in row.items()})
    res.records = rows
    res.claims = [(c, evaluate_claim(c.expr, res)) for c in suite.claims]
    if suite.quick:  # a few iterations on a subset: the numbers test the plumbing, never the paper
        for _, cr in res.claims:
            if cr.verdict != "pending":
                cr.verdict, cr.reason = "plumbing", "quick run: plumbing only, not a test of the claim"
    return res


def _with_printed_means(published: Iterable[Published]) -> list[Published]:
    """The suite's published values, plus a mean_std value after each best_of / median_of whose
    source also prints mean ± std (He 2016's "6.43 (6.61±0.16)"): both comparisons are shown."""
    out = []
    for p in published:
        out.append(p)
        if p.kind in ("best_of", "median_of") and p.mean is not None and p.std is not None:
            out.append(replace(p, kind="mean_std", value=p.mean, mean=None,
                               note=f"the mean ± std printed beside the {KIND_TEXT[p.kind].format(runs=p.runs or 'N')}"))
    return out


def _add_comparison(row: dict[str, Any], p: Published, values: np.ndarray, dataset: str | None,
                    plumbing: bool) -> None:
    """Fill the statistics columns of a row from the per-seed ``values`` (benchmark.report.stats)."""
    # Imported here: every suite parse imports this package (claims are validated), scipy only a report.
    from benchmark.report.stats import Target, compare

    target = Target(p.kind, p.value, p.runs, p.std, p.reading_uncertainty)
    c = compare(target, values, row["tolerance"], dataset)
    row.update(
        statistic=c.statistic, estimate=c.estimate, low=c.low, high=c.high, diff=c.diff, diff_low=c.diff_low,
        diff_high=c.diff_high, se=c.se, df=c.df, p_equivalence=c.p_equivalence, p_difference=c.p_difference,
        verdict=c.verdict, seeds_needed=c.seeds_needed, prior=c.prior,
    )
    if c.note:
        row["note"] = "; ".join(x for x in (row["note"], c.note) if x)
    if plumbing:
        row["verdict"], row["seeds_needed"] = "plumbing", None
