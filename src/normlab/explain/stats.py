"""The explanation maths: which values share one mean and variance under each norm, by hand.

BatchNorm, LayerNorm, GroupNorm and InstanceNorm compute y = (x - mean) / sqrt(var + eps) *
weight + bias; they differ only in which values share a mean. Each norm's registry facts
(norms.py) say which dimensions index one statistic; all take whole H x W planes, so a
statistic is a set of (sample n, channel c) planes:

    bn  per channel c:             the planes (0, c), (1, c), ... (N-1, c)
    ln  per sample n:              the planes (n, 0), (n, 1), ... (n, C-1)
    gn  per sample n and group g:  the planes (n, c) for the C/G channels of group g
    in  per sample n and channel:  the plane (n, c) alone
    brn per channel, as bn; frn per sample and channel, as in (mean(x^2) instead of a mean)

The sums below are written out plane by plane, like the second seed's spreadsheet, so that
this file shares no code path with PyTorch's kernels or with NumPy's axis reductions (the
tests check it against both). No torch here: shape errors answer before PyTorch loads.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .. import norms
from ..errors import UserError
from ..norms import EPS

MOMENTUM = 0.1      # BatchNorm2d's default weight of the newest batch in its running estimates
MAX_VALUES = 100_000  # a worked example is for reading; beyond this it is a benchmark
INPUT_RANGE = (0, 10)  # integers 0..9, so every sum can be checked by hand


def order() -> list[str]:
    """The norms worked on their own, in registry order: bn, ln, gn, in, brn, frn, then users'."""
    return [n.name for n in norms.NORMS.values() if n.facts and not n.facts.shown_with]


def facts(norm: str) -> norms.Facts:
    return norms.lookup(norm).facts


def unknown() -> list[str]:
    """Registered norms explain has no facts for: each gets a line saying so, not a failure."""
    norms.load_plugins()
    return [n.name for n in norms.NORMS.values() if n.normalizes and n.facts is None]


def title(norm: str) -> str:
    return norms.lookup(norm).title


def per_text(norm: str) -> str:
    return " and ".join(norms.WORDS[d] for d in facts(norm).per)


def axes_note(norm: str) -> str:
    f = facts(norm)
    return ", ".join("C/G channels" if d == "C" and "G" in f.per else d for d in f.axes)


def symbolic(norm: str) -> tuple[str, str]:
    """The count and values-each rules in letters, e.g. ("N*G", "C/G*H*W")."""
    f = facts(norm)
    return "*".join(f.per), "*".join("C/G" if d == "C" and "G" in f.per else d for d in f.axes)


@dataclass(frozen=True)
class Shape:
    batch: int = 3
    channels: int = 4
    height: int = 2
    width: int = 2
    groups: int = 2

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return self.batch, self.channels, self.height, self.width

    def check(self) -> "Shape":
        """Refuse shapes no norm (or not all four) can explain, naming the fix."""
        for flag, value in (("--batch", self.batch), ("--channels", self.channels), ("--height", self.height),
                            ("--width", self.width), ("--groups", self.groups)):
            if value < 1:
                raise UserError(f"{flag} {value} must be at least 1", f"pass a positive whole number, e.g. {flag} 2")
        if self.batch < 2:
            # PyTorch itself only refuses when N*H*W = 1, but with one sample BatchNorm's
            # statistics are that sample's own per-channel ones (InstanceNorm's): there is no
            # batch left to explain, and `normlab train` refuses batch 1 with bn for the same reason.
            raise UserError("--batch 1 leaves BatchNorm no batch to average over (its statistics would be one sample's own)",
                            "use --batch 2 or more")
        if self.height * self.width < 2:
            raise UserError(f"--height {self.height} --width {self.width} gives InstanceNorm one value per channel, "
                            "whose variance is 0 (PyTorch refuses it in training mode)",
                            "use at least 2 pixels, e.g. --height 2 --width 2")
        if self.channels % self.groups:
            valid = [d for d in range(1, self.channels + 1) if self.channels % d == 0]
            raise UserError(f"--groups {self.groups} does not divide {self.channels} channels",
                            f"use --groups with one of {', '.join(map(str, valid))}")
        if math.prod(self.dims) > MAX_VALUES:
            raise UserError(f"{'x'.join(map(str, self.dims))} is {math.prod(self.dims):,} values, too many to explain "
                            f"by hand (at most {MAX_VALUES:,})", "use a smaller shape, e.g. the default 3x4x2x2")
        return self


def check_seed(seed: int) -> int:
    if seed < 0:
        raise UserError(f"--seed {seed} must be 0 or more", "pass e.g. --seed 1")
    return seed


def draw_input(shape: Shape, seed: int) -> np.ndarray:
    """Small integers, reproducible from the seed, as float64 (the dtype every check uses)."""
    rng = np.random.default_rng(seed)
    return rng.integers(*INPUT_RANGE, size=shape.dims).astype(np.float64)


def layout(norm: str, batch: int, channels: int, height: int, width: int, groups: int | None = None) -> dict:
    """How many means a norm computes on a (batch, channels, height, width) activation and over
    how many values each; the same rule serves the worked example and a real net's layers."""
    sizes = {"N": batch, "C": channels, "G": groups}
    shape = [sizes[d] for d in facts(norm).per]
    count = math.prod(shape)
    return {"count": count, "values_each": batch * channels * height * width // count, "stat_shape": shape}


def params(norm: str, channels: int, height: int, width: int) -> int:
    """Learnable parameters of one layer (BatchNorm's running mean and variance are buffers)."""
    return facts(norm).params(channels, height, width)


def member_planes(norm: str, shape: Shape) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each statistic's label and the (sample, channel) planes that share it, in PyTorch's order."""
    per, size = facts(norm).per, shape.channels // shape.groups
    ranges = {"N": range(shape.batch), "C": range(shape.channels), "G": range(shape.groups)}
    out = []
    for index in itertools.product(*(ranges[d] for d in per)):
        at = dict(zip(per, index))
        label = ", ".join(f"{norms.WORDS[d]} {i}" for d, i in at.items())
        if "G" in at:
            g = at["G"]
            label += f" (channels {g * size}-{g * size + size - 1})" if size > 1 else f" (channel {g})"
        samples = [at["N"]] if "N" in at else ranges["N"]
        channels = [at["C"]] if "C" in at else range(at["G"] * size, at["G"] * size + size) if "G" in at else ranges["C"]
        planes = [(n, c) for n in samples for c in channels]
        out.append((label, planes))
    return out


@dataclass
class Statistic:
    """One mean and variance and the values they are computed over."""
    label: str
    planes: list[tuple[int, int]]
    values: list[float]
    total: float
    mean: float
    squared_deviations: float   # sum of (x - mean)^2
    var: float                  # biased: squared_deviations / m, what normalization divides by
    std: float                  # sqrt(var + eps)
    mean_square: float          # sum of x^2 / m: what FilterResponseNorm divides by (no mean removed)

    @property
    def unbiased_var(self) -> float:
        """squared_deviations / (m - 1): what BatchNorm folds into its running_var."""
        return self.squared_deviations / (len(self.values) - 1)


@dataclass
class Worked:
    """One norm worked through on one input."""
    norm: str
    stats: list[Statistic]
    output: np.ndarray


def statistic(label: str, planes: list[tuple[int, int]], x: np.ndarray) -> Statistic:
    values = [float(v) for n, c in planes for v in x[n, c].ravel()]
    total = math.fsum(values)
    mean = total / len(values)
    squared = math.fsum((v - mean) ** 2 for v in values)
    var = squared / len(values)
    return Statistic(label, planes, values, total, mean, squared, var, math.sqrt(var + EPS),
                     math.fsum(v * v for v in values) / len(values))


def work(norm: str, x: np.ndarray, shape: Shape) -> Worked:
    """Normalize x by hand: gather each statistic's planes, then apply the norm's own rule
    (bn, ln, gn, in: (x - mean) / sqrt(var + eps)) with weight = 1 and bias = 0 (PyTorch's initial values)."""
    out = np.empty_like(x)
    stats = []
    hand = facts(norm).hand
    for label, planes in member_planes(norm, shape):
        s = statistic(label, planes, x)
        for n, c in planes:
            out[n, c] = hand(x[n, c], s)
        stats.append(s)
    return Worked(norm, stats, out)


WS_KERNEL = (2, 2, 2)  # the worked +ws kernel: 2 output channels, each C x 2 x 2


def work_ws(shape: Shape, seed: int) -> tuple[np.ndarray, Worked]:
    """+ws by hand: each output channel's kernel standardized over (in, kh, kw), which are
    LayerNorm's planes with the output channel in the sample's place."""
    out, kh, kw = WS_KERNEL
    kernel = np.random.default_rng(seed + 2).integers(*INPUT_RANGE, size=(out, shape.channels, kh, kw)).astype(np.float64)
    worked = work("ln", kernel, Shape(out, shape.channels, kh, kw, 1))
    for o, s in enumerate(worked.stats):
        s.label = f"output channel {o}"
    return kernel, worked


def running_after_one_step(bn: Worked) -> dict:
    """BatchNorm's running estimates after one training step from their initial 0 and 1:
    new = (1 - momentum) * old + momentum * batch statistic, with the UNBIASED batch variance."""
    mean = [(1 - MOMENTUM) * 0.0 + MOMENTUM * s.mean for s in bn.stats]
    var = [(1 - MOMENTUM) * 1.0 + MOMENTUM * s.unbiased_var for s in bn.stats]
    return {"momentum": MOMENTUM, "unbiased_var": [s.unbiased_var for s in bn.stats],
            "running_mean": mean, "running_var": var}


def eval_output(x: np.ndarray, running: dict) -> np.ndarray:
    """BatchNorm in evaluation mode: every sample normalized by the running estimates."""
    out = np.empty_like(x)
    for c, (m, v) in enumerate(zip(running["running_mean"], running["running_var"])):
        out[:, c] = (x[:, c] - m) / math.sqrt(v + EPS)
    return out


def batch_dependence(x: np.ndarray, shape: Shape, seed: int) -> dict[str, float]:
    """How far sample 0's output moves when every other sample of the batch is redrawn."""
    other = x.copy()
    other[1:] = draw_input(shape, seed + 1)[1:]
    if np.array_equal(other, x):  # a tiny shape can redraw the same integers
        other[1:] += 1
    return {norm: float(np.abs(work(norm, x, shape).output[0] - work(norm, other, shape).output[0]).max())
            for norm in order()}
