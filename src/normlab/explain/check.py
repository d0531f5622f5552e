"""The proof: run the layers normlab's models really hold (built by norms.make_norm) on the
same input and measure how far they are from the hand computation.

float64 throughout, so a real mistake (eps added to the std instead of the variance, an
unbiased variance, a wrong grouping) shows as a difference of 1e-6 or more, far above the
1e-15 of rounding, instead of hiding in float32's 1e-7.
"""

from __future__ import annotations

import numpy as np
import torch

from ..layers import WSConv2d
from ..norms import lookup, make_norm
from ..variants import Variant
from . import stats


def variant_for(norm: str, shape: stats.Shape) -> Variant:
    return Variant.parse(f"{norm}:{shape.groups}" if lookup(norm).groups else norm)


def build_layer(norm: str, shape: stats.Shape) -> torch.nn.Module:
    _, channels, height, width = shape.dims
    return make_norm(variant_for(norm, shape), channels, height, width).to(torch.float64).train()


def run(layer: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return layer(torch.from_numpy(x)).numpy()


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def check(norm: str, worked: stats.Worked, x: np.ndarray, shape: stats.Shape) -> dict:
    """The torch layer's output, parameter count and (for bn) running estimates against the hand's."""
    layer = build_layer(norm, shape)
    result = {"variant": str(variant_for(norm, shape)), "torch_layer": repr(layer),
              "params_torch": sum(p.numel() for p in layer.parameters()),
              "max_abs_diff_vs_torch": max_diff(run(layer, x), worked.output)}
    if norm == "bn":
        # The forward pass above was one training step: the running estimates moved once.
        hand = stats.running_after_one_step(worked)
        result["running"] = {
            **hand,
            "torch_running_mean": layer.running_mean.tolist(), "torch_running_var": layer.running_var.tolist(),
            "max_abs_diff_vs_torch": max(max_diff(layer.running_mean, hand["running_mean"]),
                                         max_diff(layer.running_var, hand["running_var"])),
        }
        hand_eval = stats.eval_output(x, hand)
        result["eval"] = {"output": hand_eval.tolist(),
                          "max_abs_diff_vs_torch": max_diff(run(layer.eval(), x), hand_eval),
                          "max_abs_change_vs_training": max_diff(hand_eval, worked.output)}
    return result


def check_per_element_layernorm(ln: stats.Worked, x: np.ndarray, shape: stats.Shape) -> dict:
    """LayerNorm([C, H, W]) computes LN's statistics; only its weight and bias are per element."""
    _, channels, height, width = shape.dims
    layer = make_norm(Variant.parse("ln-elem"), channels, height, width).to(torch.float64).train()
    return {"variant": "ln-elem", "torch_layer": repr(layer),
            "params": stats.params("ln-elem", channels, height, width),
            "params_torch": sum(p.numel() for p in layer.parameters()),
            "max_abs_diff_vs_torch": max_diff(run(layer, x), ln.output)}


def check_ws(kernel: np.ndarray, worked: stats.Worked, x: np.ndarray) -> dict:
    """The WSConv2d that +ws models hold, with the hand's kernel, against a plain convolution with
    the hand-standardized kernel (padding 1): only the standardization can differ."""
    out, cin, kh, kw = kernel.shape
    conv = WSConv2d(cin, out, (kh, kw), padding=1, bias=False).to(torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel))
        hand = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(worked.output), padding=1)
    return {"torch_layer": repr(conv), "max_abs_diff_vs_torch": max_diff(run(conv, x), hand)}
