"""Plumbing runs say so: a report of a ``--quick`` suite must not read as a failed reproduction.

``bench run SUITE --quick`` trains every cell for a few iterations on a few hundred images
(benchmark.suite.quick) under the name ``<suite>-quick``, to check that the suite runs end to
end. Its numbers are compared with the paper's by the same tables, and every verdict is then
"out": true, and meaningless. The renderers put :func:`report_title` in the title and
:func:`plumbing_note` under it; verdict cells ask :func:`is_plumbing`.
"""
from __future__ import annotations

from benchmark.suite_types import Suite

QUICK_SUFFIX = "-quick"  # benchmark.suite.quick names the variant f"{suite.name}-quick"
PLUMBING_TITLE = "plumbing check, not a reproduction"
PLUMBING_VERDICT = "plumbing run: no verdict"  # what a verdict cell says instead of ✓/✗


def is_plumbing(suite: Suite) -> bool:
    """True for a ``--quick`` variant (named ``<name>-quick``): its numbers are not a reproduction."""
    return suite.name.endswith(QUICK_SUFFIX)


def report_title(suite: Suite) -> str:
    """The suite's title, with "plumbing check, not a reproduction" for a quick variant."""
    title = suite.title or suite.name
    return f"{title} — {PLUMBING_TITLE}" if is_plumbing(suite) else title


def plumbing_note(suite: Suite) -> str:
    """One paragraph for the report's header; "" for a real run."""
    if not is_plumbing(suite):
        return ""
    from benchmark.suite import QUICK_ITERATIONS, QUICK_TEST_IMAGES, QUICK_TRAIN_IMAGES

    parent = suite.name[: -len(QUICK_SUFFIX)]
    return (f"Plumbing check, not a reproduction: these are the jobs of suite {parent}'s --quick variant, "
            f"one seed per cell trained for {QUICK_ITERATIONS} iterations on {QUICK_TRAIN_IMAGES} training "
            f"and {QUICK_TEST_IMAGES} test images. They show that every cell builds, trains and reaches the "
            "database; their errors say nothing about whether the published values reproduce.")
