"""How each registered norm (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, BatchRenorm,
FilterResponseNorm, ...) computes its statistics, worked by hand on a small integer input and
checked against the layers normlab's models hold.

    from normlab.explain import explain, Shape
    e = explain(Shape(batch=3, channels=4, height=2, width=2, groups=2), seed=1)
    e.to_json()["norms"]["gn"]["max_abs_diff_vs_torch"]     # ~1e-16

Modules: stats (the hand computation, no torch), check (PyTorch's layers via make_norm),
render (text and markdown), practice (what each choice means, with the GN paper's numbers),
figure (the (N, C, H*W) cube picture), network (the table for a run's own net).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import EPS, Shape, Worked

__all__ = ["Shape", "Explanation", "explain", "explanation_markdown", "draw_figure"]


@dataclass
class Explanation:
    shape: Shape
    seed: int
    input: np.ndarray
    worked: dict[str, Worked]
    checks: dict[str, dict]        # per norm: torch layer, its parameter count, max |difference|
    per_element_ln: dict           # LayerNorm([C, H, W]) beside LN
    batch_dependence: dict[str, float]
    ws: tuple                      # the +ws worked kernel, its Worked standardization, its check

    def to_json(self) -> dict:
        from . import stats
        n, c, h, w = self.shape.dims
        norms = {}
        for norm in self.worked:
            worked, check = self.worked[norm], self.checks[norm]
            entry = {
                "name": stats.title(norm), "per": stats.per_text(norm), "axes": stats.facts(norm).axes,
                "formula": stats.facts(norm).formula,
                **stats.layout(norm, n, c, h, w, self.shape.groups),
                "mean": [s.mean for s in worked.stats], "var": [s.var for s in worked.stats],
                "std": [s.std for s in worked.stats], "mean_square": [s.mean_square for s in worked.stats],
                "groups": [{"label": s.label, "planes": [list(p) for p in s.planes], "values": s.values,
                            "sum": s.total, "mean": s.mean, "var": s.var} for s in worked.stats],
                "output": worked.output.tolist(),
                "params": stats.params(norm, c, h, w),
                "batch_dependence": self.batch_dependence[norm],
                **check,
            }
            if norm == "ln":
                entry["per_element"] = self.per_element_ln
            norms[norm] = entry
        return {
            "shape": {"batch": n, "channels": c, "height": h, "width": w, "groups": self.shape.groups},
            "seed": self.seed, "eps": EPS, "dtype": "float64",
            "variance": {"normalization": "biased: sum((x - mean)^2) / m",
                         "bn_running_var": "unbiased: sum((x - mean)^2) / (m - 1)"},
            "input": self.input.astype(int).tolist(),
            "norms": norms,
            "ws": {"kernel": self.ws[0].astype(int).tolist(), "axes": ["in", "kh", "kw"],
                   "mean": [s.mean for s in self.ws[1].stats], "var": [s.var for s in self.ws[1].stats],
                   "standardized": self.ws[1].output.tolist(), **self.ws[2]},
            "unknown": {name: "explain does not know this norm (registered without explain facts)" for name in stats.unknown()},
        }


def explain(shape: Shape = Shape(), seed: int = 1) -> Explanation:
    """Work every norm by hand on an input drawn from ``seed`` and check it with PyTorch."""
    from . import check, stats
    shape.check()
    stats.check_seed(seed)
    x = stats.draw_input(shape, seed)
    worked = {norm: stats.work(norm, x, shape) for norm in stats.order()}
    checks = {norm: check.check(norm, worked[norm], x, shape) for norm in worked}
    kernel, ws = stats.work_ws(shape, seed)
    return Explanation(shape, seed, x, worked, checks, check.check_per_element_layernorm(worked["ln"], x, shape),
                       stats.batch_dependence(x, shape, seed), (kernel, ws, check.check_ws(kernel, ws, x)))


def explanation_markdown(dataset: str, variants, batch_size: int, figure: str | None = None, level: int = 2,
                         model: str | None = None) -> str:
    """The report's section: the worked default example, then a table for the run's own net
    (``model``: the run's --model, if it brought its own)."""
    from .network import explanation_markdown as build
    return build(dataset, variants, batch_size, figure, level, model)


def draw_figure(path, shape: Shape = Shape()) -> None:
    from .figure import draw_figure as draw
    draw(path, shape)
