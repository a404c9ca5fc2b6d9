"""Error curves in the style of He et al. 2016, Fig. 6, and α / τ trajectories.

Test error bold, training error dashed, one colour per cell (depth), one panel per model family
(plain, residual, τ, ReZero, pre-activation, no BN, ...), side by side. The x-axis is iterations
for iteration-scheduled suites (the cumulative ``iterations`` metric) and epochs otherwise.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from benchmark.report.aggregate import SuiteResults, x_axis
from benchmark.report.render import Figure

# matplotlib's object API, not pyplot: no display backend and no global figure registry (nothing
# to close), and pyplot's import time is saved. The Agg canvas renders the PNG (and measures text
# for tight_layout); savefig(format="svg") uses the SVG backend.

_SCALE_NAMES = {"tau": "τ-scaled", "rezero": "ReZero", "tanh_rezero": "tanh-ReZero"}


MAX_LEGEND = 10  # lines per panel up to which each gets a legend entry


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


def cell_curves(res: SuiteResults, names: list[str] | None = None) -> pd.DataFrame:
    """Mean over seeds per (label, epoch, name), with the x value as column ``x``."""
    m = res.metrics
    if m.empty:
        return pd.DataFrame(columns=["label", "epoch", "name", "value", "x"])
    lab = res.jobs.dropna(subset=["job_id"]).set_index("job_id")["label"]
    m = m.assign(label=m["job_id"].map(lab))
    xname = x_axis(res.suite)
    keep = m["name"].isin(names) if names is not None else m["name"].str.startswith("alpha.") | (m["name"] == "tau")
    if xname == "iterations":
        keep |= m["name"] == "iterations"
    c = m[keep].groupby(["label", "epoch", "name"], sort=False)["value"].mean().reset_index()
    if xname == "iterations":
        it = c[c["name"] == "iterations"].set_index(["label", "epoch"])["value"]
        c = c[c["name"] != "iterations"]
        x = pd.Series(list(zip(c["label"], c["epoch"])), index=c.index).map(it)
        c = c.assign(x=x.fillna(c["epoch"]).to_numpy())
    else:
        c = c.assign(x=c["epoch"].astype(float))
    return c


def _save(fig, out_dir: Path, stem: str, name: str, title: str) -> Figure:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}-{name}.png", out_dir / f"{stem}-{name}.svg"
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    png.write_bytes(buf.getvalue())
    # Text as <text>, not glyph outlines: a smaller SVG whose labels stay selectable, and half the time.
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(svg, format="svg")
    return Figure(name, title, png, svg, buf.getvalue())


def _grid(n: int):
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = MplFigure(figsize=(4.6 * ncols, 3.6 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def error_figure(res: SuiteResults, out_dir: Path, stem: str) -> Figure | None:
    curves = cell_curves(res, ["test_error", "train_error"])
    if curves.empty:
        return None
    first_spec = {}
    for j in res.suite.jobs:
        first_spec.setdefault(j.label, j.spec)
    panels: dict[str, list[str]] = {}
    present = set(curves["label"].unique())
    for label in res.suite.labels:
        if label in present:
            panels.setdefault(panel_of(first_spec[label]), []).append(label)
    # Plain nets first, as in Fig. 6.
    order = sorted(panels, key=lambda p: (not p.startswith("plain"), list(panels).index(p)))
    fig, axes = _grid(len(order))
    xname = x_axis(res.suite)
    # (label, metric) -> (x, y) sorted by x: one groupby, not a DataFrame filter per line.
    lines = {key: (g["x"].to_numpy(), g["value"].to_numpy())
             for key, g in curves.sort_values("x", kind="stable").groupby(["label", "name"], sort=False)}
    for ax, panel in zip(axes, order):
        labels = panels[panel]
        colours = colormaps["viridis"](np.linspace(0, 0.9, max(len(labels), 2)))
        tops = []
        for colour, label in zip(colours, labels):
            for metric, style, width in (("train_error", "--", 1.0), ("test_error", "-", 2.2)):
                if (label, metric) not in lines:
                    continue
                x, y = lines[label, metric]
                ax.plot(x, y, style, color=colour, linewidth=width,
                        label=label if metric == "test_error" else None)
                tail = y[len(y) // 10:]
                tail = tail[~np.isnan(tail)]
                if len(tail):
                    tops.append(float(np.percentile(tail, 95)))
        top = min(100.0, max(20.0, 1.15 * max(tops))) if tops else 100.0
        ax.set_ylim(0, top)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("iterations" if xname == "iterations" else "epochs")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        if len(labels) <= MAX_LEGEND:
            ax.legend(fontsize=7, loc="upper right")
        else:  # a long legend is unreadable (and half the drawing time): name the ends of the colour scale
            ax.text(0.98, 0.98, f"dark: {labels[0]} … light: {labels[-1]}", transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
    fig.suptitle(f"{res.suite.name}: test error (bold), training error (dashed)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, stem, "errors", "Error curves: test error bold, training error dashed")


def scale_figure(res: SuiteResults, out_dir: Path, stem: str) -> Figure | None:
    """α (ReZero) or τ trajectories, one panel per cell that records them."""
    curves = cell_curves(res, None)
    if curves.empty:
        return None
    present = set(curves["label"].unique())
    labels = [lab for lab in res.suite.labels if lab in present]
    fig, axes = _grid(len(labels))
    xlabel = "iterations" if x_axis(res.suite) == "iterations" else "epochs"
    for ax, label in zip(axes, labels):
        c = curves[curves["label"] == label]
        names = list(dict.fromkeys(c["name"]))
        colours = colormaps["plasma"](np.linspace(0, 0.9, max(len(names), 2)))
        for colour, name in zip(colours, names):
            s = c[c["name"] == name].sort_values("x")
            ax.plot(s["x"], s["value"], color=colour, linewidth=1.2, label=name)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("α / τ")
        ax.grid(alpha=0.3)
        if len(names) <= 10:
            ax.legend(fontsize=6)
    fig.suptitle(f"{res.suite.name}: residual scale trajectories", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, stem, "scales", "α / τ trajectories")


def suite_figures(res: SuiteResults, out_dir: Path) -> list[Figure]:
    figs = [error_figure(res, out_dir, res.suite.name), scale_figure(res, out_dir, res.suite.name)]
    return [f for f in figs if f is not None]
