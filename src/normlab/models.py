"""The seeds' small all-convolutional nets, with the normalization chosen by variant.

Both follow the first seed's plan, C1 C2 c3 P1 C4 C5 C6 c7 P2 C8 C9 C10 GAP c11: 3x3 conv
blocks (conv -> norm -> ReLU), 1x1 "transition" convs that shrink the channel count before each
max-pool, global average pooling and a 1x1 conv as classifier. Widths are multiples of 8 so
gn:1, 2, 4 and 8 are all valid. The net is chosen by the input shape.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from .data.catalog import dataset_info
from .errors import UserError
from .norms import divisors, make_norm
from .variants import Variant

# ("C", out): 3x3 conv block; ("t", out): 1x1 transition conv; ("P",): 2x2 max-pool.
# CIFAR-10, 3x32x32: 40k parameters with bn, 5.9M multiply-adds per image (about 35 MFLOP
# per training image, forward and backward). The first block is 8 wide: at full resolution
# each channel costs the most, and the seed's 16 there added 25% compute for little accuracy.
CIFAR_PLAN = [("C", 8), ("C", 16), ("t", 8), ("P",),
              ("C", 16), ("C", 24), ("C", 24), ("t", 16), ("P",),
              ("C", 32), ("C", 32), ("C", 48)]
# MNIST / Fashion-MNIST, 1x28x28: 19k parameters with bn, 2.8M multiply-adds per image. The
# last two blocks are wider than the seed's (24, 32 instead of 16, 24): at 7x7 width is cheap,
# and on Fashion-MNIST it took ln from 91.21% to 92.06% in 20 epochs (seed 1), under 20k.
MNIST_PLAN = [("C", 8), ("C", 16), ("t", 8), ("P",),
              ("C", 16), ("C", 16), ("C", 16), ("t", 8), ("P",),
              ("C", 16), ("C", 24), ("C", 32)]
PLANS = {(3, 32, 32): CIFAR_PLAN, (1, 28, 28): MNIST_PLAN}


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, variant: Variant, height: int, width: int, dropout: float):
        layers = OrderedDict(
            # A conv followed by a norm needs no bias: the norm's shift (or mean removal) absorbs it.
            conv=nn.Conv2d(cin, cout, 3, padding=1, bias=not variant.normalizes),
            norm=make_norm(variant, cout, height, width),
            relu=nn.ReLU(inplace=True),
        )
        if dropout:
            # Dropout2d drops whole channels: N*C random draws instead of N*C*H*W, which on a
            # CPU is the difference between 1% and 35% of the step time, for the same purpose.
            layers["drop"] = nn.Dropout2d(dropout)
        super().__init__(layers)


class NormNet(nn.Sequential):
    """Logits for a batch of normalized images; layers named after the seed's C1..c11 plan."""

    def __init__(self, variant: Variant, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0):
        plan = PLANS.get(tuple(input_shape))
        if plan is None:
            raise UserError(f"no model for input shape {tuple(input_shape)}", f"use one of {', '.join(map(str, PLANS))}")
        check_groups(variant, plan)
        channels, height, width = input_shape
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        conv_index = pool_index = 0
        for step in plan:
            if step[0] == "P":
                pool_index += 1
                layers[f"P{pool_index}"] = nn.MaxPool2d(2)
                height, width = height // 2, width // 2
                continue
            conv_index += 1
            kind, out = step
            if kind == "C":
                layers[f"C{conv_index}"] = ConvBlock(channels, out, variant, height, width, dropout)
            else:
                layers[f"c{conv_index}"] = nn.Conv2d(channels, out, 1, bias=False)
            channels = out
        layers["GAP"] = nn.AdaptiveAvgPool2d(1)
        layers[f"c{conv_index + 1}"] = nn.Conv2d(channels, num_classes, 1)
        layers["flatten"] = nn.Flatten()
        super().__init__(layers)
        self.variant = variant
        self.input_shape = tuple(input_shape)


def check_groups(variant: Variant, plan) -> None:
    if variant.norm != "gn":
        return
    widths = [step[1] for step in plan if step[0] == "C"]
    common = math.gcd(*widths)
    if common % variant.groups:
        raise UserError(
            f"gn:{variant.groups} does not divide every layer's channel count ({', '.join(map(str, sorted(set(widths))))})",
            f"use gn:G with G one of {', '.join(map(str, divisors(common)))}",
        )


def build_model(variant: Variant | str, dataset: str = "cifar10", dropout: float = 0.0) -> NormNet:
    """A fresh model for ``dataset`` (a catalog name) with the variant's normalization."""
    if isinstance(variant, str):
        variant = Variant.parse(variant)
    info = dataset_info(dataset)
    return NormNet(variant, info.shape, len(info.classes), dropout)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
