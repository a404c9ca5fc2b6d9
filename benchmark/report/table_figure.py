"""The comparison table as a figure: error against depth, measured and published, per family.

He et al. 2016's CIFAR-10 message is one picture: plain nets get worse with depth, residual nets
better (Table 6 and Fig. 6). Here: x = depth (or, in a suite at one depth, the field its cells
vary), y = test error at the reported epoch; per cell the mean over seeds with its 95 % Student-t
interval and every seed as a dot; the published values as stars; one series per family (plain,
residual, τ, ReZero, ...: curves.panel_of).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, FixedLocator, NullLocator

from benchmark.report.aggregate import SuiteResults, published_text
from benchmark.report.curves import published_handles, figure_title, first_specs, panel_of
from benchmark.report.export import flat_config
from benchmark.report.render import Figure
from benchmark.report.style import (
    PUBLISHED_COLOUR, FigureStyle, add_hover, figure_legend, new_figure, palette, save, style_context,
)
from benchmark.validation import is_number
from benchmark.vocabulary import TEST_ERROR, JobState


LEVEL = 0.95
METRIC = TEST_ERROR
# Fields that make a family (panel_of) or follow from others: never the x-axis.
_NOT_AXIS = {"seed", "model.num_classes", "model.stages", "model.shortcut", "model.residual_scale", "model.order",
             "model.norm", "data.dataset"}


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided Student-t confidence interval of the mean over seeds,
    mean ± t_{(1+level)/2, n-1} · s / √n. NaN bounds for fewer than two values.

    scipy.special.stdtrit(df, p) is the quantile that scipy.stats.t.ppf(p, df) computes; it is
    imported here instead because importing scipy.stats costs seconds of the report's 5 s budget."""
    from scipy.special import stdtrit

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(v))
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stdtrit(len(v) - 1, 0.5 + level / 2)) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class XAxis:
    """What the x-axis shows: a config field (numeric or categorical) or, failing one, the cells."""

    name: str  # axis label
    value: dict[str, Any]  # label -> x value (a number, or a category's text)
    numeric: bool
    log: bool = False


def varied_axis(res: SuiteResults) -> XAxis:
    """Depth when the cells differ in depth; else the first config field that varies inside a
    family (e.g. a warm-up length or τ); else the family itself, one point per cell."""
    specs = first_specs(res.suite)
    depths = {lab: s.model.depth for lab, s in specs.items()}
    if len(set(depths.values())) > 1:
        lo, hi = min(depths.values()), max(depths.values())
        return XAxis("depth (layers)", depths, True, log=hi / lo >= 4)
    flat = {lab: flat_config(s.to_dict()) for lab, s in specs.items()}
    family = {lab: panel_of(s) for lab, s in specs.items()}
    for field in next(iter(flat.values())):
        if field in _NOT_AXIS:
            continue
        by_family: dict[str, set[str]] = {}
        for lab, cfg in flat.items():
            by_family.setdefault(family[lab], set()).add(repr(cfg.get(field)))
        if any(len(v) > 1 for v in by_family.values()):
            vals = {lab: cfg.get(field) for lab, cfg in flat.items()}
            numeric = all(is_number(v) for v in vals.values())
            return XAxis(field, vals if numeric else {k: str(v) for k, v in vals.items()}, numeric)
    return XAxis("cell", {lab: lab for lab in specs}, False)


def cell_values(res: SuiteResults, label: str, metric: str = METRIC) -> np.ndarray:
    """The cell's per-seed values at the reported epoch (finished and diverged jobs, as the table)."""
    out = [res.at_selected.get((i, metric), math.nan) for i in res.job_ids(label)]
    return np.asarray([float(v) if v is not None else math.nan for v in out], dtype=float)


def depth_figure(res: SuiteResults, out_dir: Path, stem: str, style: FigureStyle | None = None) -> Figure | None:
    """Draw the table as a figure and save it as ``OUT_DIR/<stem>-table.*``."""
    style = style or FigureStyle()
    fig = draw_table(res)
    if fig is None:
        return None
    return save(fig, out_dir, stem, "table", fig.get_label(), style)


def draw_table(res: SuiteResults) -> MplFigure | None:
    """Test error against depth (or the varied field); None when nothing is measured or published."""
    specs = first_specs(res.suite)
    axis = varied_axis(res)
    one_series = axis.name == "cell"
    family = {lab: ("cells" if one_series else panel_of(spec)) for lab, spec in specs.items()}
    measured = {lab: cell_values(res, lab) for lab in res.suite.labels if res.cells.get(lab, ("",))[0] == JobState.DONE}
    measured = {lab: v[~np.isnan(v)] for lab, v in measured.items()}
    measured = {lab: v for lab, v in measured.items() if len(v)}
    published = {p.label: p for p in res.suite.published if p.metric == METRIC and p.label in specs}
    if not measured and not published:
        return None
    order = list(dict.fromkeys(sorted(family.values(), key=lambda f: (not f.startswith("plain"),
                                                                      list(family.values()).index(f)))))
    pal = palette(order) if len(order) <= 6 else palette(list(range(len(order))))
    categories = list(dict.fromkeys(axis.value[lab] for lab in res.suite.labels)) if not axis.numeric else []

    def x_of(label: str, k: int) -> float:
        # Families side by side at one depth, not on top of each other: a small offset each.
        shift = k - (len(order) - 1) / 2
        if not axis.numeric:
            return categories.index(axis.value[label]) + 0.08 * shift
        x = float(axis.value[label])
        if axis.log:
            return x * 2 ** (0.035 * shift)
        span = (max(axis.value.values()) - min(axis.value.values())) or 1.0
        return x + 0.012 * span * shift

    with style_context():
        fig, (ax,) = new_figure(1, extra_height=1.0)
        fig.set_size_inches(5.0, fig.get_size_inches()[1] + 0.4)  # a column and a half: room for the legend
        pub_kinds: set[bool] = set()
        ns: list[int] = []
        for k, fam in enumerate(order):
            key = fam if len(order) <= 6 else k
            colour, marker = pal.colour(key), pal.marker(key)
            labels = [lab for lab in res.suite.labels if family[lab] == fam]
            pts, bars, dots = [], [], []
            for lab in labels:
                if lab not in measured:
                    continue
                v = measured[lab]
                ns.append(len(v))
                mean, lo, hi = t_interval(v)
                x = x_of(lab, k)
                pts.append((x, mean))
                ci = f", {LEVEL:.0%} t-interval [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else ""
                add_hover(ax, [x], [mean], [f"{lab}: mean {mean:.2f}{ci}, n={len(v)}"])
                add_hover(ax, [x] * len(v), v, [f"{lab}: one seed, {y:.2f}" for y in v])
                if not math.isnan(lo):
                    bars.append((x, mean, mean - lo, hi - mean))
                dots += [(x, y) for y in v]
            # One artist per family for the bars and one for the dots, not one per cell: 40 cells
            # of errorbar() calls cost more than the rest of the figure.
            if bars:
                bx, by, blo, bhi = map(list, zip(*bars))
                ax.errorbar(bx, by, yerr=[blo, bhi], color=colour, linewidth=1.0, capsize=2.5, fmt="none", zorder=3)
            if dots:
                dx, dy = zip(*dots)
                ax.plot(dx, dy, linestyle="none", marker=".", markersize=2.5, color=colour, alpha=0.45, zorder=2)
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(xs, ys, linestyle="-", linewidth=1.2, marker=marker, color=colour, zorder=4, label=fam)
            pub = [(x_of(lab, k), published[lab]) for lab in labels if lab in published]
            if len(pub) > 1:
                ax.plot([x for x, _ in pub], [p.value for _, p in pub], linestyle=":", linewidth=0.8,
                        color=colour, zorder=3)
            for x, p in pub:
                approx = bool(p.approx or p.kind == "chart_reading")
                pub_kinds.add(approx)
                ax.plot([x], [p.value], linestyle="none", marker="*", markersize=9, zorder=5,
                        markerfacecolor="white" if approx else colour, markeredgecolor=PUBLISHED_COLOUR,
                        markeredgewidth=0.8)
                add_hover(ax, [x], [p.value], [f"{p.label} published: {published_text(p)}"
                                               + (f", {p.source}" if p.source else "")])
            if not pts and pub:  # a family with published values only still gets its legend entry
                ax.plot([], [], linestyle="-", marker=marker, color=colour, label=fam)
        if axis.numeric:
            ticks = sorted(set(float(v) for v in axis.value.values()))
            if axis.log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_locator(NullLocator())
            if len(ticks) <= 12:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
            # plain numbers on every scale: a log axis would otherwise label 10^k in mathtext, which
            # style.py turns off (user text is data), so "$\mathdefault{10^{1}}$" would print as typed
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, rotation=30 if len(categories) > 4 else 0,
                               ha="right" if len(categories) > 4 else "center")
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_xlabel(axis.name)
        where = "final epoch" if res.select == "final" else f"epoch selected by {res.select}"
        ax.set_ylabel(f"test error (%), {where}")
        seeds = f"{min(ns)} seeds" if ns and min(ns) == max(ns) else f"{min(ns)}–{max(ns)} seeds" if ns else "seeds"
        handles = [Line2D([], [], color=pal.colour(fam if len(order) <= 6 else k), marker=pal.marker(
            fam if len(order) <= 6 else k), label=fam) for k, fam in enumerate(order)] if not one_series else []
        measured_text = (f"measured mean, {LEVEL:.0%} t-interval over {seeds}" if ns and max(ns) > 1
                         else "measured, one seed: no interval")
        handles += [Line2D([], [], color="0.2", marker="o", markersize=3, label=measured_text),
                    Line2D([], [], color="0.2", marker=".", linestyle="none", alpha=0.6, label="one seed")]
        handles += published_handles(pub_kinds)
        figure_legend(fig, handles)
        what = "test error against depth" if axis.name.startswith("depth") else f"test error against {axis.name}"
        fig.suptitle(figure_title(res.suite, what))
        fig.set_label(f"Test error against {axis.name}: measured mean with its {LEVEL:.0%} t-interval, "
                      "published values as stars")
        return fig
