"""The one place that turns a variant into a normalization layer.

Every other module asks ``make_norm`` for a layer and never names a norm class, so a model
called "gn:4" holds GroupNorm(4, C) and nothing else can slip in (the first seed's LayerNorm
and GroupNorm nets were BatchNorm nets under other names).
"""

from __future__ import annotations

from torch import nn

from .errors import UserError
from .variants import Variant


def make_norm(variant: Variant, channels: int, height: int, width: int) -> nn.Module:
    """The layer that normalizes a (N, channels, height, width) activation for this variant."""
    if variant.norm == "bn":
        return nn.BatchNorm2d(channels)
    if variant.norm == "gn":
        if channels % variant.groups:
            raise UserError(
                f"{variant.groups} groups do not divide {channels} channels",
                f"use a group count that divides {channels}: {', '.join(map(str, divisors(channels)))}",
            )
        return nn.GroupNorm(variant.groups, channels)
    if variant.norm == "ln":
        # One group: statistics over (C, H, W) of each sample, one weight and bias per channel,
        # which is what "LayerNorm" means for conv nets (GN paper, section 3.1).
        return nn.GroupNorm(1, channels)
    if variant.norm == "ln-elem":
        # A weight and bias per element: C*H*W each. Kept to show the seeds' parameter blow-up.
        return nn.LayerNorm([channels, height, width])
    if variant.norm == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if variant.norm == "none":
        return nn.Identity()
    raise AssertionError(f"variants.py admitted a norm make_norm does not know: {variant.norm}")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def is_norm_layer(module: nn.Module) -> bool:
    """True for any layer make_norm can build (so reports can count norm parameters)."""
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
