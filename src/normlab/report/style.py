"""One look for every figure of a run: the variant -> colour map, fonts, and PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` directly rather than pyplot: no GUI backend,
no global figure registry to leak from in a long sweep, and a notebook shows each figure once.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

# Okabe-Ito: tells eight colours apart for readers with any common colour-vision deficiency
# (and stays distinct in greyscale print better than matplotlib's tab10). Black is kept for
# text and borders, so variants get the other seven, then tab10's darker shades.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F",
           "#17becf", "#7f7f7f", "#bcbd22", "#9467bd", "#8c564b")

FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 14}

DPI = 110


def variant_colors(variants: list[str]) -> dict[str, str]:
    """The colour of each variant, by its place in the run's variant list.

    Every figure of a run calls this with the same list (``run_variants``), so ``gn:4`` has
    one colour in the curves, the grids and the report.
    """
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def run_variants(run) -> list[str]:
    """Variants in the order the run was asked for (config), then any others found in runs."""
    listed = [str(v) for v in run.config.get("variants", [])]
    return list(dict.fromkeys(listed + run.variants))


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    # No bbox_inches="tight": the saved pixels keep the figure's own geometry, so a tile's
    # place in the PNG is where its axes say it is (the grid test relies on it).
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
