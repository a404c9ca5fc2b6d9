"""How the report's figures look: print size, fonts, a colour-blind-safe palette, colour bars.

Shared by the curves (curves.py) and the table-as-a-figure (table_figure.py) so every figure of a
report has the same size, fonts and colours, and the same depth has the same colour everywhere.
Imports matplotlib: only the figure modules import this one.
"""
from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure as MplFigure

from benchmark.report.render import VECTOR_FORMATS, Band, Figure, FigureStyle  # noqa: F401 (re-exported)
from benchmark.validation import is_number


# Okabe & Ito, "Color Universal Design" (2008), the palette Nature Methods' "Points of view: Color
# blindness" (Wong 2011) recommends: distinguishable under protanopia, deuteranopia and tritanopia.
# Yellow (#F0E442) is left out (too faint on white, the complaint about viridis' end in issue 12)
# and so is black, which marks the published values. Ordered so that neighbours in depth order
# differ most in lightness as well as hue: blue, vermillion, green, purple, orange, sky blue.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
PUBLISHED_COLOUR = "#000000"
# Marker shapes in the same order: a second cue for a grey-scale print.
MARKERS = ("o", "s", "^", "D", "v", "P")

# More series than qualitative colours: a sequential map and a colour bar instead of a legend.
# viridis is perceptually uniform and colour-blind safe; cut at 0.85 so the light end stays visible.
SEQUENTIAL = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.85, 256)), name="viridis_cut")

# Sizes in inches, fonts in points: one panel is the width of one column of a two-column paper
# (IEEE and CVPR columns are 3.3-3.5 in); three panels side by side fill a full text width
# (~7 in). 8 pt is the size of a caption, and stays legible when the figure is printed as it is.
PANEL_WIDTH = 3.4
PANEL_HEIGHT = 2.5
FONT_SIZE = 8.0
SMALL_FONT = 6.5

# These points or fewer on a line: draw its markers too (a --quick run has one point per line,
# which a line alone would not show at all).
FEW_POINTS = 12


# Applied while a figure is built and saved. text.parse_math=False: a suite label such as
# "$\foo$" or "50% of $x" is data and prints as typed; with mathtext on, it fails to parse
# and savefig raises. Our own labels use Unicode (α, τ, ±) instead of TeX.
RC: dict[str, Any] = {
    "text.parse_math": False,
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": SMALL_FONT + 0.5,
    "ytick.labelsize": SMALL_FONT + 0.5,
    "legend.fontsize": SMALL_FONT,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.markersize": 3.5,
    "svg.fonttype": "none",  # text as <text>: a smaller SVG whose labels stay selectable
    "svg.hashsalt": "bench",  # the SVG's ids from its content, not random: the same data, the same file
    "pdf.fonttype": 42,  # TrueType in the PDF, which journals' submission checks accept (Type 3 they reject)
}


def style_context():
    return rc_context(RC)


@dataclass(frozen=True)
class Palette:
    """Colours for an ordered set of series keys (depths, or labels): qualitative while they fit,
    else a sequential map read through a colour bar."""

    keys: tuple[Any, ...]
    colours: tuple[Any, ...]
    cmap: Colormap | None = None  # set when the colour bar is needed
    norm: Normalize | None = None

    @property
    def needs_colourbar(self) -> bool:
        return self.cmap is not None

    def colour(self, key: Any) -> Any:
        return self.colours[self.keys.index(key)]

    def marker(self, key: Any) -> str:
        return MARKERS[self.keys.index(key) % len(MARKERS)]

    def mappable(self) -> ScalarMappable:
        sm = ScalarMappable(norm=self.norm, cmap=self.cmap)
        sm.set_array([])
        return sm


def palette(keys: Sequence[Any]) -> Palette:
    """Okabe–Ito for up to six keys; beyond, viridis (cut) by value when the keys are numbers
    (depths: the colour bar reads as a depth axis), by position otherwise."""
    keys = tuple(keys)
    if len(keys) <= len(OKABE_ITO):
        return Palette(keys, OKABE_ITO[:len(keys)])
    numeric = all(is_number(k) for k in keys)
    if numeric:
        norm = Normalize(min(keys), max(keys))
        return Palette(keys, tuple(SEQUENTIAL(norm(k)) for k in keys), SEQUENTIAL, norm)
    norm = Normalize(-0.5, len(keys) - 0.5)
    return Palette(keys, tuple(SEQUENTIAL(norm(i)) for i in range(len(keys))), SEQUENTIAL, norm)


def add_colourbar(fig: MplFigure, axes: Sequence[Any], pal: Palette, label: str,
                  text: Callable[[Any], str] = str) -> None:
    """A colour bar beside ``axes`` for a palette too long for a legend; ``text`` names a key."""
    cb = fig.colorbar(pal.mappable(), ax=list(axes), shrink=0.9, pad=0.02, aspect=30)
    cb.set_label(label)
    numeric = all(is_number(k) for k in pal.keys)
    if not numeric:  # ticks at the keys' positions, thinned to at most 8 so they stay readable
        step = max(1, -(-len(pal.keys) // 8))
        ticks = list(range(0, len(pal.keys), step))
        cb.set_ticks(ticks)
        cb.set_ticklabels([text(pal.keys[i]) for i in ticks])
    cb.ax.tick_params(labelsize=SMALL_FONT)


def new_figure(n_panels: int, ncols: int = 3, sharey: bool = True, sharex: bool = True,
               extra_height: float = 0.45):
    """A figure of ``n_panels`` axes (at most ``ncols`` a row) at print size, constrained layout.
    ``sharey``: the panels a reader compares get one y-axis (the issue's 0–90 against 0–85)."""
    ncols = max(1, min(n_panels, ncols))
    nrows = -(-n_panels // ncols)
    fig = MplFigure(figsize=(PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows + extra_height), layout="constrained")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the Agg canvas renders the PNG and measures text for the layout
    fig.bench_hover = []  # (axes, x, y, text) per point that shows its value on hover (add_hover)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey, sharex=sharex)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    if sharey:  # tick labels on every panel: a panel is often cropped out on its own in a paper
        for ax in axes.flat[:n_panels]:
            ax.yaxis.set_tick_params(labelleft=True)
    if sharex:
        for ax in axes.flat[:n_panels]:
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, list(axes.flat[:n_panels])


def legend_columns(labels: Sequence[str], width: float) -> int:
    """The most legend columns that fit in ``width`` inches: a legend wider than its figure is cut
    off at both sides. Estimated from the text lengths (matplotlib fills columns top to bottom, and
    each column is as wide as its longest entry), not by drawing: a draw costs a tenth of a second."""
    def fits(ncols: int) -> bool:
        rows = -(-len(labels) // ncols)
        cols = [labels[i:i + rows] for i in range(0, len(labels), rows)]
        total = sum(max(len(t) for t in col) * 0.62 * SMALL_FONT / 72 + 0.7 for col in cols)
        return total <= width - 0.1

    return next((n for n in range(len(labels), 0, -1) if fits(n)), 1)


def figure_legend(fig: MplFigure, handles: Sequence[Any]) -> None:
    """One legend under the panels, in as many columns as fit."""
    width = fig.get_size_inches()[0]
    fig.legend(handles=list(handles), loc="outside lower center",
               ncols=legend_columns([h.get_label() for h in handles], width))


# ----------------------------------------------------------------------------------------------
# Values on hover: SVG <title> tooltips
#
# A hover point is a transparent circle with a <title>, laid over the figure in its own <g> at the
# end of the SVG, at the point's position computed from the axes' transform once the layout is
# done. Our own layer rather than gids on matplotlib's artists: matplotlib writes a line's markers
# as <use> elements without any per-point identity, and may drop the clipped ones, so matching
# tooltips to them would depend on its SVG writer's internals. The same layer goes over the PNG in
# the HTML where the vector file is too big to inline (html.py).

HOVER_RADIUS = 3.5  # points: a circle about a marker's size, easy to find with a mouse


def add_hover(ax: Any, x: Sequence[float], y: Sequence[float], texts: Sequence[str]) -> None:
    """Points of ``ax`` (data coordinates) that show ``texts`` on hover in the SVG and HTML."""
    hover = getattr(ax.figure, "bench_hover", None)
    if hover is not None:
        hover.extend((ax, float(a), float(b), t) for a, b, t in zip(x, y, texts))


def thin(n: int, most: int = 8) -> list[int]:
    """Indices of at most ``most`` + 1 evenly spaced points of a line of ``n``, the last included:
    a 200-epoch curve gets a tooltip every 25 epochs, not 200 (80 lines would be 16,000 circles)."""
    if n <= most:
        return list(range(n))
    step = math.ceil(n / most)
    return sorted(set(range(0, n, step)) | {n - 1})


def hover_layer(fig: MplFigure) -> str:
    """The hover points as SVG markup in the figure's point coordinates ("" when there are none)."""
    points = getattr(fig, "bench_hover", [])
    if not points:
        return ""
    w, h = fig.get_size_inches() * 72  # the SVG's viewBox is the figure in points, y downwards
    width, height = fig.bbox.width, fig.bbox.height  # display pixels at the figure's dpi
    out = ['<g class="hover" fill="#000" fill-opacity="0" stroke="none">']
    for ax, x, y, text in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        px, py = ax.transData.transform((x, y))
        out.append(f'<circle cx="{px / width * w:.1f}" cy="{(1 - py / height) * h:.1f}" r="{HOVER_RADIUS}">'
                   f"<title>{html.escape(text, quote=False)}</title></circle>")
    out.append("</g>")
    return "\n".join(out)


def save(fig: MplFigure, out_dir: Path, stem: str, name: str, title: str, style: FigureStyle) -> Figure:
    """PNG (at ``style.dpi``) for the HTML and markdown, SVG (with the hover layer) and PDF for a paper."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{stem}-{name}"
    with style_context():
        # One draw per file. ``savefig`` draws twice whenever the figure has a layout engine (a
        # render-less draw to run the layout, then the real one, which runs it again), so the files
        # are printed by their canvases directly, as savefig would at its defaults (rc savefig.*
        # untouched: facecolor "auto", no bbox_inches), with the dpi set and restored the same way.
        buf = io.BytesIO()
        screen_dpi = fig.dpi
        fig.dpi = style.dpi
        try:
            FigureCanvasAgg(fig).print_png(buf)  # this draw runs the constrained layout
        finally:
            fig.dpi = screen_dpi
        png = base.with_suffix(".png")
        png.write_bytes(buf.getvalue())
        # The layout is done: keep it for the vector files, a quarter less time each than laying
        # the text out again.
        fig.set_layout_engine("none")
        hover = hover_layer(fig)
        svg = io.StringIO()
        try:
            FigureCanvasSVG(fig).print_svg(svg, metadata={"Date": None})  # draws at 72 dpi, leaves fig.dpi there
        finally:
            fig.dpi = screen_dpi
        text = svg.getvalue()
        if hover:
            end = text.rindex("</svg>")
            text = f"{text[:end]}{hover}\n{text[end:]}"
        base.with_suffix(".svg").write_text(text, encoding="utf-8")
        pdf = None
        if "pdf" in style.vector:
            pdf = base.with_suffix(".pdf")
            fig.savefig(pdf, format="pdf")
    w, h = fig.get_size_inches() * 72
    return Figure(name, title, png, base.with_suffix(".svg"), buf.getvalue(), pdf, (float(w), float(h)), hover)
