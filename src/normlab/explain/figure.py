"""The GN paper's Figure 2, drawn from code: each norm as the (N, C, H*W) cube with the values
that share one mean and variance shaded.

The cube is drawn in oblique projection (C across, H*W up, N going back) as flat polygons, so it
needs no 3D toolkit and every cell edge is crisp. Only the three visible faces are drawn; a cell
on a face is shaded when its (sample, channel) plane belongs to the shaded statistic, which for
all four norms includes every pixel, so the shading runs down whole columns.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import UserError
from . import stats
from .stats import Shape

SIZE = (4.0, 3.2, 2.6)            # drawn width (C), height (H*W) and depth (N) of every cube
DEPTH_DIR = (0.62, 0.42)          # screen direction of the N axis per unit of depth
SHADE, SHADE_EDGE = "#6a9fd8", "#2b5d94"
FACE = {"front": "#ffffff", "top": "#eeeeee", "side": "#dddddd"}
GRID, OUTLINE = "#9a9a9a", "#333333"
MAX_GRID = 32                     # past this many cells an axis gets no inner lines


def shaded(norm: str, shape: Shape):
    """The planes of the first statistic (the one the paper shades), as a membership test."""
    _, planes = stats.member_planes(norm, shape)[0]
    members = set(planes)
    return lambda n, c: (n, c) in members


def project(c: float, s: float, n: float) -> tuple[float, float]:
    return c + n * DEPTH_DIR[0], s + n * DEPTH_DIR[1]


def draw_cube(ax, ox: float, norm: str, shape: Shape) -> None:
    from matplotlib.patches import Polygon
    n_, c_, h_, w_ = shape.dims
    hw = h_ * w_
    cw, sh, nd = SIZE[0] / c_, SIZE[1] / hw, SIZE[2] / n_
    is_shaded = shaded(norm, shape)

    def quad(points, color, edge=None, lw=0.0, z=1):
        xy = [(ox + x, y) for x, y in (project(*p) for p in points)]
        ax.add_patch(Polygon(xy, closed=True, facecolor=color, edgecolor=edge or color, linewidth=lw, zorder=z))

    # Faces, cell column by cell column: front (sample 0), top (every sample), right side (last channel).
    for c in range(c_):
        quad([(c * cw, 0, 0), ((c + 1) * cw, 0, 0), ((c + 1) * cw, SIZE[1], 0), (c * cw, SIZE[1], 0)],
             SHADE if is_shaded(0, c) else FACE["front"])
        for n in range(n_):
            quad([(c * cw, SIZE[1], n * nd), ((c + 1) * cw, SIZE[1], n * nd), ((c + 1) * cw, SIZE[1], (n + 1) * nd),
                  (c * cw, SIZE[1], (n + 1) * nd)], SHADE if is_shaded(n, c) else FACE["top"])
    for n in range(n_):
        quad([(SIZE[0], 0, n * nd), (SIZE[0], 0, (n + 1) * nd), (SIZE[0], SIZE[1], (n + 1) * nd),
              (SIZE[0], SIZE[1], n * nd)], SHADE if is_shaded(n, c_ - 1) else FACE["side"])

    def line(p, q, color=GRID, lw=0.6, z=2):
        (x0, y0), (x1, y1) = project(*p), project(*q)
        ax.plot([ox + x0, ox + x1], [y0, y1], color=color, linewidth=lw, zorder=z, solid_capstyle="round")

    if c_ <= MAX_GRID:
        for c in range(1, c_):
            line((c * cw, 0, 0), (c * cw, SIZE[1], 0))
            line((c * cw, SIZE[1], 0), (c * cw, SIZE[1], SIZE[2]))
    if hw <= MAX_GRID:
        for s in range(1, hw):
            line((0, s * sh, 0), (SIZE[0], s * sh, 0), lw=0.4)
            line((SIZE[0], s * sh, 0), (SIZE[0], s * sh, SIZE[2]), lw=0.4)
    if n_ <= MAX_GRID:
        for n in range(1, n_):
            line((0, SIZE[1], n * nd), (SIZE[0], SIZE[1], n * nd))
            line((SIZE[0], 0, n * nd), (SIZE[0], SIZE[1], n * nd))
    if norm == "gn" and 1 < shape.groups < c_:
        # Group boundaries, so the G groups read as blocks of channels.
        size = c_ // shape.groups
        for g in range(1, shape.groups):
            line((g * size * cw, 0, 0), (g * size * cw, SIZE[1], 0), OUTLINE, 1.4, 3)
            line((g * size * cw, SIZE[1], 0), (g * size * cw, SIZE[1], SIZE[2]), OUTLINE, 1.4, 3)

    # The cube's outline: front rectangle, then the three receding edges and the back edges.
    x, y, d = SIZE
    for p, q in [((0, 0, 0), (x, 0, 0)), ((x, 0, 0), (x, y, 0)), ((x, y, 0), (0, y, 0)), ((0, y, 0), (0, 0, 0)),
                 ((0, y, 0), (0, y, d)), ((x, y, 0), (x, y, d)), ((x, 0, 0), (x, 0, d)),
                 ((0, y, d), (x, y, d)), ((x, y, d), (x, 0, d))]:
        line(p, q, OUTLINE, 1.3, 4)

    # Axis names as in the paper: C under the front, H, W beside it, N along the receding top edge.
    ax.text(ox + x / 2, -0.28, f"C = {c_}", ha="center", va="top", fontsize=10)
    ax.text(ox - 0.18, y / 2, f"H, W\n{h_}x{w_}", ha="right", va="center", fontsize=10)
    tx, ty = project(0, y, d * 0.55)
    ax.text(ox + tx - 0.15, ty + 0.05, f"N = {n_}", ha="right", va="bottom", fontsize=10, rotation=34)


def caption(norm: str, shape: Shape) -> str:
    n, c, h, w = shape.dims
    lay = stats.layout(norm, n, c, h, w, shape.groups)
    what = f"one per {stats.per_text(norm)}" + (f" (G = {shape.groups})" if "G" in stats.facts(norm).per else "")
    return f"{lay['count']} means and variances,\n{what},\neach over {lay['values_each']} values"


def figure_png(shape: Shape = Shape()) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape.check()
    order = ("bn", "ln", "in", "gn")  # the paper's order
    step = SIZE[0] + SIZE[2] * DEPTH_DIR[0] + 2.2
    top = SIZE[1] + SIZE[2] * DEPTH_DIR[1]
    xlim, ylim = (-1.6, len(order) * step - 1.6), (-2.7, top + 1.9)
    width = 15.0
    fig, ax = plt.subplots(figsize=(width, width * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])), dpi=110)
    fig.subplots_adjust(0, 0, 1, 1)
    for i, norm in enumerate(order):
        ox = i * step
        draw_cube(ax, ox, norm, shape)
        ax.text(ox + (SIZE[0] + SIZE[2] * DEPTH_DIR[0]) / 2, top + 0.3, f"{stats.title(norm)} ({norm})",
                ha="center", va="bottom", fontsize=13, fontweight="bold")
        ax.text(ox + SIZE[0] / 2, -0.8, caption(norm, shape), ha="center", va="top", fontsize=10, color="#333333",
                linespacing=1.35)
    n, c, h, w = shape.dims
    middle = (xlim[0] + xlim[1]) / 2
    ax.text(middle, ylim[1] - 0.15, f"Which values share one mean and variance (shaded), "
            f"on a batch of N x C x H x W = {n}x{c}x{h}x{w}", ha="center", va="top", fontsize=13)
    ax.text(middle, ylim[0] + 0.05, 'After Wu & He, "Group Normalization", ECCV 2018, Figure 2', ha="center",
            va="bottom", fontsize=8, color="#666666")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": MARK})
    plt.close(fig)
    return buf.getvalue()


# Written into the PNG's Software field: the mark by which a figure normlab drew may be drawn
# over again, while any other file of that name (a figure of yours) is left alone.
MARK = "normlab explain"


def drawn_by_normlab(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:                # reads the header chunks only, not the pixels
            return image.format == "PNG" and image.info.get("Software") == MARK
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def check_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--figure {path} is a folder", "give a file name, e.g. norms.png")
    if path.suffix.lower() != ".png":
        raise UserError(f"--figure {path} is not a .png file name", "name the figure e.g. norms.png")
    return path


def check_new_figure(path) -> Path:
    """`normlab explain --figure PATH`: a path of the user's choosing, outside any run folder's
    manifest, so what may be drawn over is told by the PNG itself. (A run folder's own figure is
    governed by its manifest: `report` redraws it whoever drew it.)"""
    path = check_path(path)
    if path.is_symlink() or (path.exists() and not (path.is_file() and drawn_by_normlab(path))):
        raise UserError(f"--figure {path} exists and is not a figure normlab explain drew, so it is not replaced",
                        "give a new file name, or move that file away")
    return path


def draw_figure(path, shape: Shape = Shape()) -> None:
    from ..storage import write_bytes  # imports torch; kept out of the input checks above
    path = check_path(path)
    data = figure_png(shape)
    try:
        write_bytes(path, data)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc})", "choose a folder you can write to") from None
