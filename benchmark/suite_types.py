"""What a parsed suite file is: jobs, published numbers, claims, tolerance.

Kept apart from the parser (``benchmark.suite``) so the reporter and the store can import the
types without the TOML machinery.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from benchmark.config import JobSpec
from benchmark.validation import Rule
from benchmark.vocabulary import TEST_ERROR, Selection

# How a published number was obtained. The report prints it next to the value, because a
# best-of-5 and a single run are not the same kind of evidence (He 2016 Table 6 mixes both).
PublishedKind = Literal[
    "single",  # one printed number; the source does not say it is more than one run
    "best_of",  # best of ``runs`` runs (He 2016 ResNet-110: best of 5)
    "mean_std",  # mean ± std over ``runs`` runs
    "median_of",  # median of ``runs`` runs (He 2016b: "median of 5 runs")
    "chart_reading",  # measured off a figure: approximate by nature
    "derived",  # computed by us from a source (a CSV log, a formula); say how in ``note``
    "expected",  # a reference run of this benchmark (smoke suite), not a paper number
]


@dataclass(frozen=True)
class Job:
    """One expanded job of a suite: its human label, its cell (label without the seed) and spec."""

    label: str  # e.g. "resnet-20" ; unique per cell within the suite
    spec: JobSpec
    stored_key: str | None = None  # a registered job's key as the database holds it

    @property
    def key(self) -> str:
        """The stored key of a registered job (the database is the source of truth), else the
        key of the spec as this code computes it."""
        return self.stored_key or self.spec.key

    @property
    def seed(self) -> int:
        return self.spec.seed


@dataclass(frozen=True)
class Published:
    """A number from a paper or repository that a cell is compared with."""

    label: str  # the cell label it belongs to
    value: float  # in the metric's unit (errors in percent)
    metric: str = TEST_ERROR
    kind: PublishedKind = "single"
    runs: int | None = None
    std: float | None = None  # for mean_std (and best_of when the source prints it, e.g. 6.61±0.16)
    mean: float | None = None  # when the source prints a mean next to best/median
    approx: bool = False  # chart readings, third-party readings, derived values
    source: str = ""  # paper + table/figure, or repository + commit + file
    note: str = ""
    tolerance: float | None = None  # overrides the suite's tolerance (the equivalence margin) for this value
    # chart_reading: standard uncertainty (1 sd) of reading the value off the figure, in the metric's
    # unit; None: benchmark.report.stats.DEFAULT_READING_UNCERTAINTY (0.1 pp)
    reading_uncertainty: float | None = None

    RULES: ClassVar[dict[str, Rule]] = {  # None: not given
        "runs": Rule(">= 1", lambda v: v is None or v >= 1),
        "std": Rule(">= 0", lambda v: v is None or v >= 0),
        "tolerance": Rule(">= 0", lambda v: v is None or v >= 0),
    }


@dataclass(frozen=True)
class Claim:
    """A qualitative statement checked against the results, in a small safe expression language."""

    name: str
    text: str  # the claim in words, with its source
    expr: str  # e.g. 'final("plain-56", "train_error") > final("plain-20", "train_error")'
    source: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    title: str = ""
    description: str = ""
    source: str = ""  # the paper / repository the suite reproduces
    protocol: str = ""  # one line describing the protocol, printed by the reporter
    tolerance: float = 1.0  # the equivalence margin of every comparison (benchmark.report.stats), metric's unit
    select: Selection = "final"  # which epoch's value is reported
    jobs: tuple[Job, ...] = ()
    published: tuple[Published, ...] = ()
    claims: tuple[Claim, ...] = ()
    text: str = field(default="", repr=False)  # the TOML source as read, stored with the suite
    # What a report must say about where its jobs came from (e.g. a suite file edited since it was
    # registered); set by report.api.resolve_suites, shown in every report's header.
    notices: tuple[str, ...] = ()
    quick: bool = False  # a --quick variant (benchmark.suite.quick): its verdicts are plumbing only

    @property
    def labels(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for j in self.jobs:
            seen.setdefault(j.label, None)
        return tuple(seen)
