"""The report's figures, read back from the matplotlib Figure objects: shared y-axes, seed bands,
published stars, palette, markers, colour bars, mathtext-proof labels, the table as a figure, files."""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_hex

from benchmark.config import ScheduleConfig
from benchmark.report.aggregate import summarize
from benchmark.report.curves import MEAN_LINES, SEED_LINES, cell_curves, draw_errors, draw_scales, suite_figures
from benchmark.report.style import OKABE_ITO, VECTOR_FORMATS, FigureStyle
from benchmark.report.synthetic import fake_jobs, fake_metrics, make_suite
from benchmark.report.table_figure import draw_table, t_interval, varied_axis
from benchmark.suite_types import Published

PUBLISHED = (Published("resnet-20", 8.75, source="He 2016 Table 6"), Published("resnet-56", 6.97),
             Published("plain-56", 13.5, kind="chart_reading", approx=True))


def results(depths=(20, 32, 56), seeds=range(5), epochs=12, published=PUBLISHED, with_alpha=False, **kw):
    suite = make_suite(depths=depths, seeds=seeds, epochs=epochs, published=published, **kw)
    return summarize(suite, fake_jobs(suite), fake_metrics(suite, with_alpha=with_alpha))


def panels(fig):
    """The data axes (not colour bars), in drawing order."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def legend_texts(fig) -> list[str]:
    out = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    for ax in fig.axes:
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out


@dataclass(frozen=True)
class Drawn:
    """One line of a LineCollection, read like a Line2D."""

    x: Any
    colour: Any
    solid: bool

    def get_xdata(self):
        return self.x

    def get_color(self):
        return self.colour

    def get_marker(self):
        return None


def collection_lines(ax, label: str) -> list[Drawn]:
    """The lines of the panel's collection ``label`` (curves.PanelArtists: MEAN_LINES, SEED_LINES)."""
    out = []
    for c in ax.collections:
        if isinstance(c, LineCollection) and c.get_label() == label:
            colours, styles = c.get_colors(), c.get_linestyles()
            for i, path in enumerate(c.get_paths()):
                out.append(Drawn(path.vertices[:, 0], colours[i % len(colours)], styles[i % len(styles)][1] is None))
    return out


def mean_lines(ax, style: str = "-"):
    """The mean lines of a panel in the given style: Line2D where they have markers (few points),
    else the paths of its mean-lines collection."""
    marked = [ln for ln in ax.get_lines() if ln.get_linestyle() == style and ln.get_linewidth() > 0.5]
    return marked + [d for d in collection_lines(ax, MEAN_LINES) if d.solid == (style == "-")]


@pytest.fixture(scope="module")
def five_seeds():
    return results()


def test_error_panels_share_one_y_axis(five_seeds):
    fig = draw_errors(five_seeds)
    plain, residual = panels(fig)
    assert [plain.get_title(), residual.get_title()] == ["plain, SYNTHETIC", "residual, SYNTHETIC"]
    assert plain.get_shared_y_axes().joined(plain, residual)
    assert plain.get_ylim() == residual.get_ylim()
    assert plain.get_ylim()[0] == 0 and plain.get_ylim()[1] >= 13.5  # the published star fits
    assert plain.get_xlim()[0] == 0


def test_band_over_seeds_and_a_legend_that_says_what_lines_mean(five_seeds):
    fig = draw_errors(five_seeds)
    for ax in panels(fig):
        (bands,) = [c for c in ax.collections if isinstance(c, PolyCollection)]  # one collection per panel
        assert len(bands.get_paths()) == 3 * 2  # three depths, test and training error
    texts = legend_texts(fig)
    assert {"test error (solid)", "training error (dashed)", "band: ±1 std over 5 seeds"} <= set(texts)
    assert {"20 layers", "32 layers", "56 layers"} <= set(texts)
    # The band of plain-20's test error spans mean ± std over the seeds, epoch by epoch.
    c = cell_curves(five_seeds, ["test_error"])
    c = c[c["label"] == "plain-20"].sort_values("x")
    (bands,) = [b for b in panels(fig)[0].collections if isinstance(b, PolyCollection)]
    ys = bands.get_paths()[1].vertices[:, 1]  # plain-20's training error, then its test error
    assert ys.max() == pytest.approx((c["value"] + c["std"]).max())
    assert ys.min() == pytest.approx((c["value"] - c["std"]).min())
    ranged = draw_errors(five_seeds, FigureStyle(band="range"))
    assert "band: min–max over 5 seeds" in legend_texts(ranged)


def test_published_values_are_stars_at_the_end_of_training(five_seeds):
    fig = draw_errors(five_seeds)
    stars = [(ax.get_title(), ln) for ax in panels(fig) for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 3
    got = {(t.split(",")[0], float(ln.get_xdata()[0]), float(ln.get_ydata()[0]), ln.get_markerfacecolor())
           for t, ln in stars}
    resnet_colour = {to_hex(ln.get_color()) for ln in mean_lines(panels(fig)[1])}
    assert ("plain", 12.0, 13.5, "white") in got  # a chart reading: hollow
    assert {(t, x, y) for t, x, y, _ in got} >= {("residual", 12.0, 8.75), ("residual", 12.0, 6.97)}
    assert {to_hex(f) for t, _, _, f in got if t == "residual"} <= resnet_colour
    assert "published, end of training" in legend_texts(fig)
    assert "published, approximate (chart reading)" in legend_texts(fig)


def test_colour_blind_safe_palette_one_colour_per_depth_in_every_panel(five_seeds):
    fig = draw_errors(five_seeds)
    colours = [[to_hex(ln.get_color()) for ln in mean_lines(ax)] for ax in panels(fig)]
    assert colours[0] == colours[1]  # plain-20 and resnet-20 share a colour, as in Fig. 6
    assert len(set(colours[0])) == 3 and set(colours[0]) <= {c.lower() for c in OKABE_ITO}


def test_lines_with_few_points_get_markers():
    quick = draw_errors(results(epochs=1))
    for ax in panels(quick):
        assert all(ln.get_marker() not in (None, "None", "") for ln in mean_lines(ax) + mean_lines(ax, "--"))
    full = draw_errors(results(epochs=40))
    assert all(ln.get_marker() in (None, "None", "") for ax in panels(full) for ln in mean_lines(ax))


def test_thin_seed_lines_on_request(five_seeds):
    thin = lambda fig: [ln for ax in panels(fig) for ln in collection_lines(ax, SEED_LINES)]  # noqa: E731
    assert thin(draw_errors(five_seeds)) == []
    fig = draw_errors(five_seeds, FigureStyle(seed_lines=True))
    assert len(thin(fig)) == len(five_seeds.suite.jobs) * 2
    assert "one seed (thin)" in legend_texts(fig)


def test_many_depths_get_a_colour_bar_instead_of_a_legend():
    fig = draw_errors(results(depths=(8, 14, 20, 26, 32, 38, 44, 50), seeds=(0, 1)))
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "depth (layers)"
    assert not any(t.endswith(" layers") for t in legend_texts(fig))


def with_blocks(res, blocks: int):
    """res with ``blocks`` ReZero α trajectories per job (ReZero-50 has 16)."""
    m = res.metrics
    t = np.arange(1, m["epoch"].max() + 1, dtype=float)
    extra = [pd.DataFrame({"job_id": j, "epoch": t.astype(int), "name": f"alpha.stage{b // 8 + 1}.block{b % 8}",
                           "value": 0.05 * (b + 1) * (1 - np.exp(-t / 3)) + 0.01 * (hash(j) % 7)})
             for j in res.jobs["job_id"] for b in range(blocks)]
    metrics = pd.concat([m, *extra], ignore_index=True)
    return summarize(res.suite, fake_jobs(res.suite), metrics)


def test_scale_panels_with_many_blocks_get_a_colour_bar(five_seeds):
    many = draw_scales(with_blocks(five_seeds, 16))
    bars = [ax for ax in many.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == len(five_seeds.suite.labels) and bars[0].get_ylabel() == "block (input → output)"
    assert all(ax.get_legend() is None for ax in panels(many))
    first = panels(many)[0]
    assert [t.get_text() for t in bars[0].get_yticklabels()][:2] == ["stage1.block0", "stage1.block2"]
    assert first.get_shared_y_axes().joined(first, panels(many)[-1])
    few = draw_scales(results(with_alpha=True))
    assert not [ax for ax in few.axes if ax.get_label() == "<colorbar>"]
    assert [t.get_text() for t in panels(few)[0].get_legend().get_texts()] == \
        ["stage1.block0", "stage1.block1", "stage1.block2"]


MATH_LABELS = (r"$\foo$-20", "50% of $x_1")


def test_dollar_labels_print_as_typed(tmp_path):
    """Labels are data: matplotlib's mathtext must not parse (and crash on) them."""
    suite = make_suite(name=r"m$\bar{", depths=(20,), seeds=(0, 1), epochs=4, families=("resnet",))
    a, b = MATH_LABELS
    suite = replace(suite, jobs=tuple(replace(j, label=a if j.seed == 0 else b) for j in suite.jobs),
                    published=(Published(a, 9.0),))
    res = summarize(suite, fake_jobs(suite), fake_metrics(suite, with_alpha=True))
    figs = suite_figures(res, tmp_path, FigureStyle(dpi=60, vector=VECTOR_FORMATS))
    assert [f.name for f in figs] == ["errors", "table", "scales"]
    for f in figs:
        svg = f.svg.read_text()
        assert r"$\foo$-20" in svg and "50% of $x_1" in svg, f.name
        assert f.pdf.read_bytes()[:5] == b"%PDF-"


def test_vector_and_print_size_files(tmp_path, five_seeds):
    figs = suite_figures(five_seeds, tmp_path, FigureStyle(dpi=150, vector=VECTOR_FORMATS))
    assert [f.name for f in figs] == ["errors", "table"]
    for f in figs:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.png.read_bytes() == f.png_bytes
        assert f.svg.read_text().lstrip().startswith("<?xml") and "<svg" in f.svg.read_text()
        assert f.pdf.read_bytes()[:5] == b"%PDF-"
    width, height = struct.unpack(">II", figs[0].png_bytes[16:24])
    assert (width, height) == pytest.approx((2 * 3.4 * 150, (2.5 + 0.55) * 150), abs=1)  # two print-size panels
    no_pdf = suite_figures(five_seeds, tmp_path / "svg", FigureStyle())  # PDF on request only
    assert all(f.pdf is None for f in no_pdf) and not list((tmp_path / "svg").glob("*.pdf"))


# ----------------------------------------------------------------------------------------------
# The table as a figure


def test_t_interval_is_student_t():
    stats = pytest.importorskip("scipy.stats")
    v = [7.1, 7.4, 6.9, 7.3, 7.0]
    mean, lo, hi = t_interval(v)
    half = stats.t.ppf(0.975, 4) * np.std(v, ddof=1) / math.sqrt(5)
    assert (mean, lo, hi) == pytest.approx((np.mean(v), np.mean(v) - half, np.mean(v) + half))
    assert math.isnan(t_interval([7.0])[1]) and math.isnan(t_interval([])[0])


def test_table_figure_error_against_depth_per_family(five_seeds):
    fig = draw_table(five_seeds)
    (ax,) = panels(fig)
    assert ax.get_xlabel() == "depth (layers)" and ax.get_xscale() == "linear"
    series = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in ("plain, SYNTHETIC", "residual, SYNTHETIC")}
    assert set(series) == {"plain, SYNTHETIC", "residual, SYNTHETIC"}
    # Measured means at each depth: the cells' means over their five seeds.
    rows = {r["label"]: r for r in five_seeds.records}
    assert list(series["residual, SYNTHETIC"].get_ydata()) == pytest.approx(
        [rows[f"resnet-{d}"]["mean"] for d in (20, 32, 56)])
    # Error bars: the 95 % t-interval of each cell (one collection per family, a segment per cell).
    bars = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert len(bars) == 2 and [len(b.get_segments()) for b in bars] == [3, 3]
    seg = bars[0].get_segments()[0]
    vals = [five_seeds.at_selected[(j, "test_error")] for j in five_seeds.job_ids("plain-20")]
    _, lo, hi = t_interval(vals)
    assert (seg[:, 1].min(), seg[:, 1].max()) == pytest.approx((lo, hi))
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert sorted(float(ln.get_ydata()[0]) for ln in stars) == [6.97, 8.75, 13.5]
    assert "measured mean, 95% t-interval over 5 seeds" in legend_texts(fig)


def test_table_figure_axis_follows_the_varied_field():
    deep = results(depths=(20, 110), seeds=(0, 1))
    assert varied_axis(deep).log and draw_table(deep).axes[0].get_xscale() == "log"
    fig = draw_table(deep)
    fig.canvas.draw()  # log ticks read as plain numbers (mathtext is off: "$\mathdefault{10^{1}}$" would print)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()] == ["20", "110"]
    many = draw_table(results(depths=tuple(range(8, 87, 6)), seeds=(0, 1)))  # 14 depths: matplotlib's log ticks
    many.canvas.draw()
    texts = [t.get_text() for t in many.axes[0].get_xticklabels() if t.get_text()]
    assert texts and not any("$" in t for t in texts), texts
    res = results(depths=(20,), seeds=(0, 1), families=("resnet",))
    suite = res.suite
    jobs = tuple(replace(j, label=f"warm-{k}", spec=replace(j.spec, schedule=replace(j.spec.schedule, warmup_length=k)))
                 for k in (0, 400) for j in suite.jobs)
    suite = replace(suite, jobs=jobs, published=())
    res = summarize(suite, fake_jobs(suite), fake_metrics(suite))
    axis = varied_axis(res)
    assert axis.name == "schedule.warmup_length" and axis.numeric and axis.value == {"warm-0": 0, "warm-400": 400}
    assert draw_table(res).axes[0].get_xlabel() == "schedule.warmup_length"
    none = replace(suite, jobs=suite.jobs[:2], published=())
    assert varied_axis(summarize(none, fake_jobs(none), fake_metrics(none))).name == "cell"


def test_unfinished_cells_are_not_drawn_as_measured():
    suite = make_suite(depths=(20, 56), seeds=(0, 1), epochs=4, published=PUBLISHED)
    jobs = fake_jobs(suite)
    jobs.loc[jobs["label"] == "resnet-56", "state"] = "running"
    fig = draw_table(summarize(suite, jobs, fake_metrics(suite)))
    residual = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "residual, SYNTHETIC"][0]
    assert list(residual.get_xdata()) != [] and len(residual.get_xdata()) == 1  # resnet-20 only
    assert any(ln.get_marker() == "*" and ln.get_ydata()[0] == 6.97 for ln in fig.axes[0].get_lines())


def test_nothing_to_draw_gives_no_figure():
    suite = make_suite(depths=(20,), seeds=(0,), epochs=3)
    empty = summarize(suite, None, None)
    assert draw_errors(empty) is None and draw_scales(empty) is None and draw_table(empty) is None
    assert math.isnan(t_interval([math.nan])[0])


def test_schedule_in_iterations_labels_thousands():
    suite = make_suite(depths=(20,), seeds=(0, 1), families=("resnet",))
    sched = ScheduleConfig(unit="iteration", length=5 * 391, milestones=(1000,))
    suite = replace(suite, jobs=tuple(replace(j, spec=replace(j.spec, schedule=sched)) for j in suite.jobs))
    fig = draw_errors(summarize(suite, fake_jobs(suite), fake_metrics(suite, epochs=5)))
    ax = panels(fig)[0]
    assert ax.get_xlabel() == "iterations"
    assert max(mean_lines(ax)[0].get_xdata()) == 5 * 391  # the "iterations" metric, not the epoch
    fig.canvas.draw()
    assert any(t.get_text().endswith("k") for t in ax.get_xticklabels())


def test_figures_drawn_in_worker_processes_are_the_ones_drawn_here(tmp_path, monkeypatch):
    """write_reports draws big reports' figures in forked workers (api.draw_figures): same files,
    same order, same tooltips as one process drawing them all."""
    from benchmark.report import api

    other = replace(results().suite, name="toy2")
    res = [results(), summarize(other, fake_jobs(other), fake_metrics(other, with_alpha=True))]
    serial = api.draw_figures(res, tmp_path / "serial", FigureStyle(dpi=60))
    monkeypatch.setattr(api, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1})  # two CPUs even where the test has one
    parallel = api.draw_figures(res, tmp_path / "parallel", FigureStyle(dpi=60))
    assert [[f.name for f in figs] for figs in serial] == [["errors", "table"], ["errors", "table", "scales"]]
    assert [[f.name for f in figs] for figs in parallel] == [[f.name for f in figs] for figs in serial]
    for a, b in zip(sum(serial, []), sum(parallel, [])):
        assert a.png_bytes == b.png_bytes and a.png.read_bytes() == b.png.read_bytes()
        assert a.hover_svg == b.hover_svg and a.hover_svg.count("<title>") > 5
        assert b.png.parent == tmp_path / "parallel"


@pytest.mark.parametrize("n_panels", [1, 2, 3])
@pytest.mark.parametrize("labels", [
    ["20 layers", "56 layers", "110 layers", "solid: residual", "dashed: plain", "published, end of training",
     "band: mean ± std over seeds"],
    [f"{k}-{d}" for k in ("plain", "resnet") for d in (20, 32, 44, 56, 110)] + ["published value (end of training)"],
])
def test_the_legend_fits_inside_its_figure(n_panels, labels):
    from matplotlib.lines import Line2D

    from benchmark.report.style import figure_legend, new_figure, style_context
    with style_context():
        fig, _ = new_figure(n_panels, ncols=n_panels)
        figure_legend(fig, [Line2D([], [], label=t, marker="o") for t in labels])
        fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)  # not cut at the sides


def test_a_diverged_stretch_leaves_a_gap_in_the_mean_line_and_finite_axes(tmp_path):
    """NaN errors in every seed of a cell (a stretch where all diverged) break its mean line (in the
    mean-lines collection, as a Line2D would) and do not reach the axis limits."""
    suite = make_suite(depths=(20,), seeds=(0, 1), epochs=40)
    m = fake_metrics(suite)
    gap = (m["label"] == "plain-20") & m["epoch"].between(10, 14) & (m["name"] == "test_error")
    m.loc[gap, "value"] = math.nan
    res = summarize(suite, fake_jobs(suite), m)
    fig = draw_errors(res)
    plain = panels(fig)[0]
    (mean,) = [c for c in plain.collections if isinstance(c, LineCollection) and c.get_label() == MEAN_LINES]
    ys = [p.vertices[:, 1] for p in mean.get_paths()]
    assert sum(np.isnan(y).sum() for y in ys) == 5  # the gap is kept, not interpolated over
    assert all(np.isfinite(ax.get_xlim()).all() and np.isfinite(ax.get_ylim()).all() for ax in panels(fig))
    figs = suite_figures(res, tmp_path)
    assert [f.name for f in figs] == ["errors", "table"] and all(f.png.stat().st_size > 1000 for f in figs)
