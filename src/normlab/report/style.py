"""One look for every figure and report: each variant's colour and title, fonts, PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` directly rather than pyplot: no GUI backend,
no global figure registry to leak from in a long sweep, and a notebook shows each figure once.
"""

from __future__ import annotations

import hashlib
import io

from matplotlib.figure import Figure

# Okabe-Ito: tells eight colours apart for readers with any common colour-vision deficiency
# (and stays distinct in greyscale print better than matplotlib's tab10), then tab10's darker shades.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F",
           "#17becf", "#7f7f7f", "#bcbd22", "#9467bd", "#8c564b")

# A colour per name, not per place in a run: gn:4 is green in every run, figure and report.
# Keyed by the norm (group count and L1 strength left out); names not listed get a colour
# from a hash of the name, so a user-registered norm also keeps its colour between runs.
FIXED_COLORS = {"bn": 0, "ln": 1, "gn": 2, "in": 3, "ln-elem": 4, "brn": 5, "frn": 6, "bn+l1": 7,
                "none": 8, "gn+l1": 9, "ln+l1": 10, "in+l1": 11}

# How titles spell each norm: "ln" alone reads as "In" in many fonts (and `in` is InstanceNorm).
NORM_NAMES = {"bn": "BatchNorm", "ln": "LayerNorm", "gn": "GroupNorm", "in": "InstanceNorm",
              "ln-elem": "LayerNorm, per-element affine", "none": "no normalization",
              "brn": "Batch Renormalization", "frn": "Filter Response Norm"}
SUFFIX_NAMES = {"l1": "L1", "ws": "weight standardization"}

FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 14}

DPI = 110


def split_variant(name: str) -> tuple[str, str | None, list[str]]:
    """'gn:4+l1=5e-5' -> ('gn', '4', ['l1']), without the registry: any name, known or not."""
    head, *suffixes = name.split("+")
    norm, _, groups = head.partition(":")
    return norm, groups or None, [s.partition("=")[0] for s in suffixes]


def variant_title(name: str) -> str:
    """'GroupNorm, 4 groups (gn:4)', 'BatchNorm + L1 (bn+l1)', 'LayerNorm (ln)'; unknown -> the name."""
    norm, groups, suffixes = split_variant(name)
    if norm not in NORM_NAMES:
        return name
    words = NORM_NAMES[norm] + (f", {groups} group" + ("" if groups == "1" else "s") if groups else "")
    words += "".join(f" + {SUFFIX_NAMES.get(s, s)}" for s in suffixes)
    return f"{words} ({name})"


def preferred_color(name: str) -> int:
    norm, _, suffixes = split_variant(name)
    key = "+".join([norm, *suffixes])
    if key in FIXED_COLORS:
        return FIXED_COLORS[key]
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % len(PALETTE)


def variant_colors(variants: list[str]) -> dict[str, str]:
    """The colour of each variant: its own fixed colour, unless another variant of the same list
    already took it (gn:2 beside gn:4), then the next free one. The same list always gets the
    same colours, and the common names keep theirs in any list."""
    taken: dict[str, int] = {}
    for name in variants:
        k = preferred_color(name)
        while k in taken.values() and len(taken) < len(PALETTE):
            k = (k + 1) % len(PALETTE)
        taken[name] = k
    return {name: PALETTE[k] for name, k in taken.items()}


def run_variants(run) -> list[str]:
    """Variants in the order the run was asked for (config), then any others found in runs."""
    listed = [str(v) for v in run.config.get("variants", [])]
    return list(dict.fromkeys(listed + run.variants))


def plural(n, word: str) -> str:
    """'1 epoch', '3 epochs', '1 pair'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def seeds_text(first: int, seeds: int) -> str:
    """'seed 1', 'seeds 1-3'."""
    return f"seed {first}" if seeds == 1 else f"seeds {first}-{first + seeds - 1}"


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    # No bbox_inches="tight": the saved pixels keep the figure's own geometry, so a tile's
    # place in the PNG is where its axes say it is (the grid test relies on it).
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
