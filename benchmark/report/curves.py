"""Error curves in the style of He et al. 2016, Fig. 6, and α / τ trajectories, with the seed spread.

Test error solid, training error dashed, one colour per depth (the same depth has the same colour
in every panel), one panel per model family (plain, residual, τ, ReZero, pre-activation, no BN,
...), side by side on one shared y-axis so that the eye compares like with like. Each line is the
mean over seeds with a band (±1 std, or min–max: FigureStyle.band) and, on request, one thin line
per seed. The published value is a star at the end of training. The x-axis is iterations for
iteration-scheduled suites (the cumulative ``iterations`` metric) and epochs otherwise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.lines import Line2D
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure as MplFigure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from benchmark.report.aggregate import SuiteResults, published_text, x_axis
from benchmark.report.plumbing import PLUMBING_TITLE, is_plumbing
from benchmark.report.render import FIGURE_KINDS, Figure, safe_stem
from benchmark.report.style import (
    FEW_POINTS, PUBLISHED_COLOUR, FigureStyle, add_colourbar, add_hover, figure_legend, new_figure, palette, save,
    style_context, thin,
)
from benchmark.vocabulary import ALPHA_PREFIX, ITERATIONS, TAU, TEST_ERROR, TRAIN_ERROR

# matplotlib's object API, not pyplot: no display backend and no global figure registry (nothing
# to close), and pyplot's import time is saved.

_SCALE_NAMES = {"tau": "τ-scaled", "rezero": "ReZero", "tanh_rezero": "tanh-ReZero"}
ERROR_METRICS = (TEST_ERROR, TRAIN_ERROR)


def panel_of(spec) -> str:
    """The family a cell is drawn with: plain vs residual, and the variant knobs except depth."""
    m = spec.model
    parts = ["plain" if m.shortcut == "none" else "residual"]
    if m.residual_scale != "none":
        parts.append(_SCALE_NAMES.get(m.residual_scale, m.residual_scale))
    if m.order == "pre":
        parts.append("pre-activation")
    if m.norm == "none":
        parts.append("no BN")
    if spec.data.dataset != "cifar10":
        parts.append(spec.data.dataset.upper().replace("CIFAR", "CIFAR-"))
    return ", ".join(parts)


def first_specs(suite) -> dict[str, Any]:
    """label -> the spec of its first job (the cell's config; seeds differ only in ``seed``)."""
    out: dict[str, Any] = {}
    for j in suite.jobs:
        out.setdefault(j.label, j.spec)
    return out


def figure_title(suite, what: str) -> str:
    plumbing = f"\n{PLUMBING_TITLE}" if is_plumbing(suite) else ""  # its own line: a long title is cut off
    return f"{suite.name}: {what}{plumbing}"


# ----------------------------------------------------------------------------------------------
# Data: per seed, and per cell (mean and spread over seeds)


def seed_curves(res: SuiteResults, names: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per (job, epoch, metric): job_id, label, epoch, name, value and the x value ``x``.
    ``names=None``: the residual scales (``alpha.*``, ``tau``)."""
    cols = ["job_id", "label", "epoch", "name", "value", "x"]
    m = res.metrics
    if m.empty:
        return pd.DataFrame(columns=cols)
    names_col = m["name"].astype(str) if not isinstance(m["name"].dtype, pd.CategoricalDtype) else m["name"]
    keep = names_col.isin(names) if names is not None else (names_col.str.startswith(ALPHA_PREFIX) | (names_col == TAU))
    c = m[keep.to_numpy()]
    lab = res.jobs.dropna(subset=["job_id"]).set_index("job_id")["label"]
    c = c.assign(label=c["job_id"].map(lab).to_numpy(), name=c["name"].astype(str).to_numpy())
    c = c[c["label"].notna()]
    if x_axis(res.suite) == ITERATIONS:
        it = m[(names_col == ITERATIONS).to_numpy()].set_index(["job_id", "epoch"])["value"]
        at = pd.MultiIndex.from_arrays([c["job_id"], c["epoch"]])
        x = it.reindex(at).to_numpy()
        c = c.assign(x=np.where(np.isnan(x), c["epoch"].to_numpy(dtype=float), x))
    else:
        c = c.assign(x=c["epoch"].to_numpy(dtype=float))
    return c[cols].reset_index(drop=True)


def cell_curves(res: SuiteResults, names: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per (label, epoch, name) over the cell's seeds: ``value`` (mean), ``std`` (ddof 1), ``lo`` and
    ``hi`` (min, max), ``n`` (seeds with a value) and the mean x value ``x``."""
    s = seed_curves(res, names)
    if s.empty:
        return pd.DataFrame(columns=["label", "epoch", "name", "value", "std", "lo", "hi", "n", "x"])
    g = s.groupby(["label", "epoch", "name"], sort=False, observed=True)
    return g.agg(value=("value", "mean"), std=("value", "std"), lo=("value", "min"), hi=("value", "max"),
                 n=("value", "count"), x=("x", "mean")).reset_index()


def _lines(frame: pd.DataFrame, by: list[str]) -> dict[Any, pd.DataFrame]:
    """key -> rows sorted by x: one groupby, not a DataFrame filter per line."""
    return {k: g for k, g in frame.sort_values("x", kind="stable").groupby(by, sort=False)}


def _band(c: pd.DataFrame, style: FigureStyle) -> tuple[np.ndarray, np.ndarray]:
    mean = c["value"].to_numpy(dtype=float)
    if style.band == "range":
        return c["lo"].to_numpy(dtype=float), c["hi"].to_numpy(dtype=float)
    std = np.nan_to_num(c["std"].to_numpy(dtype=float))  # one seed: no spread to show
    return mean - std, mean + std


MEAN_LINES, SEED_LINES = "_mean lines", "_seed lines"  # the collections' labels ("_": not in a legend)


@dataclass
class PanelArtists:
    """What _draw collects for one panel, added by ``add_to`` as one collection per kind: 80 mean
    lines as one LineCollection instead of 80 Line2D took a 40-cell errors figure from ~0.75 to
    ~0.55 s (benchmarks/report_speed.py's suites), all of it matplotlib's per-artist bookkeeping;
    40 bands as 40 fill_between cost a third of a figure before they became one PolyCollection."""

    lines: list = field(default_factory=list)  # (xy, colour, linestyle, width): the means, zorder 3
    seed_lines: list = field(default_factory=list)  # (xy, colour, linestyle): one per seed, zorder 2
    bands: list = field(default_factory=list)  # (polygon, rgba): the spread over seeds, zorder 2

    def add_to(self, ax) -> None:
        if self.bands:
            ax.add_collection(PolyCollection([b for b, _ in self.bands], facecolors=[c for _, c in self.bands],
                                             linewidths=0, zorder=2))
        if self.seed_lines:
            ax.add_collection(LineCollection([xy for xy, _, _ in self.seed_lines],
                                             colors=[c for _, c, _ in self.seed_lines],
                                             linestyles=[ls for _, _, ls in self.seed_lines],
                                             linewidths=0.4, alpha=0.6, zorder=2, label=SEED_LINES))
        if self.lines:
            ax.add_collection(LineCollection([xy for xy, *_ in self.lines], colors=[c for _, c, _, _ in self.lines],
                                             linestyles=[ls for _, _, ls, _ in self.lines],
                                             linewidths=[w for *_, w in self.lines], zorder=3, label=MEAN_LINES))


def _draw(ax, c: pd.DataFrame, style: FigureStyle, colour: Any, marker: str, linestyle: str, width: float,
          band_alpha: float, seeds: pd.DataFrame | None, panel: PanelArtists, hollow: bool = False,
          crowded: bool = False, hover: str = "", xname: str = "epoch", digits: int = 2) -> None:
    """One mean line with its band (error bars where there is one point), markers if few points
    (``crowded``, a panel of many lines read through a colour bar: only for one or two points).
    The line, band and seed lines go to ``panel``, added by PanelArtists.add_to; a line with markers
    is a Line2D of its own. ``hover``: what the line is (e.g. "resnet-20, test error"), for the
    tooltips of a few of its points."""
    x, mean = c["x"].to_numpy(dtype=float), c["value"].to_numpy(dtype=float)
    lo, hi = _band(c, style)
    if hover:
        std, n = c["std"].to_numpy(dtype=float), c["n"].to_numpy(dtype=int).tolist()
        at = thin(len(x))
        add_hover(ax, x[at], mean[at], [
            f"{hover}, {xname} {x[i]:g}: {mean[i]:.{digits}f}"
            + (f" ± {std[i]:.{digits}f}" if np.isfinite(std[i]) else "") + f" (mean of {n[i]} seed{'' if n[i] == 1 else 's'})"
            for i in at])
    if len(x) <= (2 if crowded else FEW_POINTS):
        ax.plot(x, mean, linestyle=linestyle, color=colour, linewidth=width, marker=marker,
                markerfacecolor="white" if hollow else colour, markeredgecolor=colour, zorder=3)
    else:
        panel.lines.append((np.column_stack([x, mean]), colour, linestyle, width))
    ok = np.isfinite(lo) & np.isfinite(hi)  # a diverged seed's NaN leaves a gap, not a broken polygon
    if ok.sum() > 1:
        xs = x[ok]
        panel.bands.append((np.column_stack([np.r_[xs, xs[::-1]], np.r_[lo[ok], hi[ok][::-1]]]),
                            to_rgba(colour, band_alpha)))
    elif np.isfinite(lo).all() and (hi > lo).any():
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=colour, linewidth=0.8, capsize=2, fmt="none")
    if seeds is not None:
        for _, s in seeds.groupby("job_id", sort=False):
            panel.seed_lines.append((np.column_stack([s["x"].to_numpy(dtype=float), s["value"].to_numpy(dtype=float)]),
                                     colour, linestyle))


def _x_ticks(ax, xname: str) -> None:
    if xname == ITERATIONS:
        # He 2016 Fig. 6 counts iterations in units of 1e4; "32k" reads the same without an offset label.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5


def band_handle(style: FigureStyle, n: list[int]) -> Any:
    """The band's legend entry; with one seed per cell there is no band, and the legend says so."""
    if not n or max(n) <= 1:
        return Line2D([], [], linestyle="none", label="one seed per cell: no band")
    return Patch(color="0.2", alpha=0.25, linewidth=0, label=f"band: {style.band_text(n)}")


def published_handles(kinds: set[bool], where: str = "") -> list[Any]:
    """Legend entries for the published stars: filled for a printed number, hollow for an approximate one."""
    out = []
    if False in kinds:
        out.append(Line2D([], [], linestyle="none", marker="*", markersize=8, color=PUBLISHED_COLOUR,
                          label=f"published{where}"))
    if True in kinds:
        out.append(Line2D([], [], linestyle="none", marker="*", markersize=8, markerfacecolor="white",
                          markeredgecolor=PUBLISHED_COLOUR, label="published, approximate (chart reading)"))
    return out


# ----------------------------------------------------------------------------------------------
# Error curves


def series_keys(specs: dict[str, Any], panels: dict[str, list[str]]) -> dict[str, Any]:
    """label -> what its colour stands for: the depth when that tells the cells of every panel
    apart (so plain-20 and resnet-20 share a colour, as in Fig. 6), else the label itself."""
    if all(len({specs[lab].model.depth for lab in labels}) == len(labels) for labels in panels.values()):
        return {lab: specs[lab].model.depth for labels in panels.values() for lab in labels}
    return {lab: lab for labels in panels.values() for lab in labels}


def error_figure(res: SuiteResults, out_dir: Path, stem: str, style: FigureStyle | None = None) -> Figure | None:
    """Draw the error curves and save them (PNG, SVG, PDF) as ``OUT_DIR/<stem>-errors.*``."""
    style = style or FigureStyle()
    fig = draw_errors(res, style)
    if fig is None:
        return None
    return save(fig, out_dir, stem, "errors", fig.get_label(), style)


def draw_errors(res: SuiteResults, style: FigureStyle | None = None) -> MplFigure | None:
    """The error curves as a matplotlib Figure; None when no cell has recorded an error yet."""
    style = style or FigureStyle()
    curves = cell_curves(res, ERROR_METRICS)
    if curves.empty:
        return None
    specs = first_specs(res.suite)
    present = set(curves["label"])
    panels: dict[str, list[str]] = {}
    for label in res.suite.labels:
        if label in present:
            panels.setdefault(panel_of(specs[label]), []).append(label)
    # Plain nets first, as in Fig. 6.
    order = sorted(panels, key=lambda p: (not p.startswith("plain"), list(panels).index(p)))
    key_of = series_keys(specs, panels)
    keys = list(dict.fromkeys(key_of[lab] for p in order for lab in panels[p]))
    by_depth = all(isinstance(k, int) for k in keys)
    pal = palette(sorted(keys) if by_depth else keys)
    lines = _lines(curves, ["label", "name"])
    seeds = _lines(seed_curves(res, ERROR_METRICS), ["label", "name"]) if style.seed_lines else {}
    published = {(p.label, p.metric): p for p in res.suite.published if p.metric in ERROR_METRICS}
    xname = x_axis(res.suite)
    with style_context():
        fig, axes = new_figure(len(order), extra_height=0.55)
        tops, pub_kinds = [], set()
        for ax, panel in zip(axes, order):
            artists = PanelArtists()
            for label in panels[panel]:
                key = key_of[label]
                colour, marker = pal.colour(key), pal.marker(key)
                end = float(specs[label].schedule.length)  # the end of training, in x units
                for metric, ls, width, alpha in ((TRAIN_ERROR, "--", 0.9, 0.10), (TEST_ERROR, "-", 1.5, 0.22)):
                    c = lines.get((label, metric))
                    if c is None:
                        continue
                    _draw(ax, c, style, colour, marker, ls, width, alpha, seeds.get((label, metric)), artists,
                          hollow=metric == "train_error", crowded=pal.needs_colourbar,
                          hover=f"{label}, {metric.replace('_', ' ')}",
                          xname="iteration" if xname == "iterations" else "epoch")
                    y = c["hi"].to_numpy(dtype=float) if style.band == "range" else c["value"].to_numpy(dtype=float)
                    tail = y[len(y) // 10:]
                    tail = tail[~np.isnan(tail)]
                    if len(tail):
                        tops.append(float(np.percentile(tail, 95)))
                    p = published.get((label, metric))
                    if p is not None:
                        approx = bool(p.approx or p.kind == "chart_reading")
                        pub_kinds.add(approx)
                        tops.append(p.value)
                        ax.plot([end], [p.value], linestyle="none", marker="*", markersize=9, zorder=5,
                                markerfacecolor="white" if approx else colour, markeredgecolor=PUBLISHED_COLOUR,
                                markeredgewidth=0.8, clip_on=False)
                        add_hover(ax, [end], [p.value], [f"{label}, {metric.replace('_', ' ')} published: "
                                                         f"{published_text(p)}" + (f", {p.source}" if p.source else "")])
            artists.add_to(ax)
            ax.set_title(panel)
            ax.set_xlabel("iterations" if xname == ITERATIONS else "epochs")
            ax.set_ylabel("error (%)")
            _x_ticks(ax, xname)
            if not by_depth and not pal.needs_colourbar:  # labels differ per panel: a legend each
                ax.legend(handles=[Line2D([], [], color=pal.colour(lab), label=lab) for lab in panels[panel]],
                          loc="upper right")
        # One y-axis for every panel (sharey), high enough for the tails and the published stars.
        # The first epochs' ~90 % would flatten the part that matters, so the limit follows the tail.
        top = min(100.0, max(20.0, 1.15 * max(tops))) if tops else 100.0
        axes[0].set_ylim(0, top)
        # From 0, as Fig. 6 (and a --quick run's single point is not centred in a ±4 % window).
        axes[0].set_xlim(left=0)
        handles: list[Any] = []
        if pal.needs_colourbar:
            add_colourbar(fig, axes, pal, "depth (layers)" if by_depth else "cell")
        elif by_depth:
            handles += [Line2D([], [], color=pal.colour(k), marker=pal.marker(k), markersize=3, label=f"{k} layers")
                        for k in pal.keys]
        n = curves[curves["name"] == TEST_ERROR].groupby("label")["n"].max().tolist()
        handles += [Line2D([], [], color="0.2", linewidth=1.5, label="test error (solid)"),
                    Line2D([], [], color="0.2", linewidth=0.9, linestyle="--", label="training error (dashed)"),
                    band_handle(style, n)]
        if style.seed_lines:
            handles.append(Line2D([], [], color="0.2", linewidth=0.4, alpha=0.6, label="one seed (thin)"))
        handles += published_handles(pub_kinds, ", end of training")
        figure_legend(fig, handles)
        fig.suptitle(figure_title(res.suite, "test error (solid) and training error (dashed)"))
        fig.set_label(f"Error curves: test error solid, training error dashed, band {style.band_text(n)}")
        return fig


# ----------------------------------------------------------------------------------------------
# α / τ trajectories


def _natural(name: str) -> list[Any]:
    """alpha.stage1.block10 after alpha.stage1.block2: the blocks' order in the network."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _scale_name(name: str) -> str:
    return "τ" if name == TAU else name.removeprefix(ALPHA_PREFIX)


def scale_figure(res: SuiteResults, out_dir: Path, stem: str, style: FigureStyle | None = None) -> Figure | None:
    """Draw the α / τ trajectories and save them as ``OUT_DIR/<stem>-scales.*``."""
    style = style or FigureStyle()
    fig = draw_scales(res, style)
    if fig is None:
        return None
    return save(fig, out_dir, stem, "scales", fig.get_label(), style)


def draw_scales(res: SuiteResults, style: FigureStyle | None = None) -> MplFigure | None:
    """α (ReZero) or τ trajectories, one panel per cell that records them, one line per block."""
    style = style or FigureStyle()
    curves = cell_curves(res, None)
    if curves.empty:
        return None
    present = set(curves["label"])
    labels = [lab for lab in res.suite.labels if lab in present]
    lines = _lines(curves, ["label", "name"])
    seeds = _lines(seed_curves(res, None), ["label", "name"]) if style.seed_lines else {}
    xname = x_axis(res.suite)
    with style_context():
        fig, axes = new_figure(len(labels), extra_height=0.45)
        for ax, label in zip(axes, labels):
            names = sorted({k[1] for k in lines if k[0] == label}, key=_natural)
            pal = palette(names)
            artists = PanelArtists()
            for name in names:
                _draw(ax, lines[label, name], style, pal.colour(name), pal.marker(name), "-", 1.1, 0.18,
                      seeds.get((label, name)), artists, crowded=pal.needs_colourbar,
                      hover=f"{label}, {_scale_name(name)}", xname="iteration" if xname == "iterations" else "epoch",
                      digits=3)
            artists.add_to(ax)
            ax.axhline(0, color="0.5", linewidth=0.5)
            ax.set_title(label)
            ax.set_xlabel("iterations" if xname == ITERATIONS else "epochs")
            ax.set_ylabel("residual scale (α or τ)")
            _x_ticks(ax, xname)
            if pal.needs_colourbar:  # 16 blocks of ReZero-50 make an unreadable legend: a colour bar
                add_colourbar(fig, [ax], pal, "block (input → output)", text=_scale_name)
            else:
                ax.legend(handles=[Line2D([], [], color=pal.colour(k), marker=pal.marker(k), markersize=3,
                                          label=_scale_name(k)) for k in names], loc="lower right")
        axes[0].set_xlim(left=0)
        n = curves.groupby("label")["n"].max().tolist()
        handles = [band_handle(style, n)]
        if style.seed_lines:
            handles.append(Line2D([], [], color="0.2", linewidth=0.4, alpha=0.6, label="one seed (thin)"))
        figure_legend(fig, handles)
        fig.suptitle(figure_title(res.suite, "residual scale trajectories"))
        fig.set_label(f"α / τ trajectories, band {style.band_text(n)}")
        return fig


def suite_figure(res: SuiteResults, out_dir: Path, kind: str, style: FigureStyle | None = None) -> Figure | None:
    """One figure of a suite's report (a FIGURE_KINDS name); None when it has nothing to show."""
    from benchmark.report.table_figure import depth_figure

    style = style or FigureStyle()
    stem = safe_stem(res.suite.name)
    draw = {"errors": error_figure, "table": depth_figure, "scales": scale_figure}[kind]
    return draw(res, out_dir, stem, style)


def suite_figures(res: SuiteResults, out_dir: Path, style: FigureStyle | None = None) -> list[Figure]:
    """Every figure of a suite's report: error curves, error against depth, α / τ trajectories."""
    figs = [suite_figure(res, out_dir, kind, style) for kind in FIGURE_KINDS]
    return [f for f in figs if f is not None]
