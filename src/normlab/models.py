"""The seeds' small all-convolutional nets, with the normalization chosen by variant.

Both follow the first seed's plan, C1 C2 c3 P1 C4 C5 C6 c7 P2 C8 C9 C10 GAP c11: 3x3 conv
blocks (conv -> ReLU -> norm, the seeds' order), 1x1 "transition" convs that shrink the channel count before each
max-pool, global average pooling and a 1x1 conv as classifier. Widths are multiples of 8 so
gn:1, 2, 4 and 8 are all valid. The net is chosen by the input shape; other shapes get the
same plan with as many pools as bring the image to about 8x8.

Your own model: ``build_model(v, dataset, model="pkg.module:function")`` calls
``function(norm_layer, in_channels, num_classes)``, ``norm_layer(channels)`` returning the
variant's layer (torchvision's and timm's convention). ``convert(model, "gn:8")`` swaps the
BatchNorm2d layers of any model.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections import OrderedDict

import torch
from torch import nn

from .data.catalog import dataset_info
from .errors import UserError
from . import norms
from .layers import WSConv2d
from .norms import make_norm
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
# The order inside the conv blocks (ConvBlock), written into every checkpoint: weights trained in
# one order give other outputs in the other, so a checkpoint of normlab's net from before 0.2.0
# (conv -> norm -> ReLU in every block, the key absent) is refused instead of mispredicting.
BLOCK_ORDER, OLD_BLOCK_ORDER = "conv-relu-norm", "conv-norm-relu"


def plan_for(shape: tuple[int, int, int]) -> list[tuple]:
    """The seed plan for ``shape``: the two seed nets as they are; any other image gets the
    CIFAR plan (MNIST's for one channel) with its middle stage repeated or dropped so that the
    pools bring the image closest to 8x8 (64x64: three pools; 40x40: two, to 10x10)."""
    if tuple(shape) in PLANS:
        return PLANS[tuple(shape)]
    base = MNIST_PLAN if shape[0] == 1 else CIFAR_PLAN
    first, middle = base[:base.index(("P",)) + 1], base[base.index(("P",)) + 1:-3]
    pools = max(0, round(math.log2(min(shape[1:]) / 8)))
    return (first + middle * (pools - 1) if pools else []) + base[-3:]


class ConvBlock(nn.Sequential):
    """conv -> ReLU -> norm, the seeds' order; conv -> norm -> ReLU where ``relu_last``.

    On 3,600 Fashion-MNIST images, 10 epochs (docs/recipe.md), against conv -> norm -> ReLU it
    raised every norm: seed 1 ln 78.0 -> 82.4%, gn:4 80.65 -> 83.4, bn 84.25 -> 85.6, bn+l1 85.6
    -> 86.4; seed 2 and images 20,000-24,000 alike (ln +7.0 and +6.65). The norm then hands the
    next conv, and the classifier, zero-mean features with a learned offset instead of half-zero
    ReLU outputs. The conv keeps no bias (the ReLU's threshold stays at 0): a bias moved the same
    runs by under a point (ln 81.75, gn:4 83.75, bn 86.0)."""

    def __init__(self, cin: int, cout: int, variant: Variant, height: int, width: int, dropout: float,
                 relu_last: bool = False):
        conv = (WSConv2d if variant.ws else nn.Conv2d)(cin, cout, 3, padding=1, bias=not variant.normalizes)
        norm = make_norm(variant, cout, height, width)
        layers = OrderedDict(conv=conv)
        if not norms.lookup(variant.norm).relu:      # the norm ends in its own activation (frn's TLU)
            layers["norm"] = norm
        elif relu_last:
            layers.update(norm=norm, relu=nn.ReLU(inplace=True))
        else:
            layers.update(relu=nn.ReLU(inplace=True), norm=norm)
        if dropout:
            # Dropout2d drops whole channels: N*C random draws instead of N*C*H*W, which on a
            # CPU is the difference between 1% and 35% of the step time, for the same purpose.
            layers["drop"] = nn.Dropout2d(dropout)
        super().__init__(layers)


def pools_to_constant(norm: nn.Module, channels: int, height: int, width: int) -> bool:
    """Whether global average pooling right after ``norm`` gives every image the same features.

    True of a norm that takes each channel of each image to mean 0 over H x W (in, gn with one
    channel per group): the pooled feature is then the norm's shift, whatever the image, and a
    net that ends conv -> ReLU -> norm -> GAP cannot learn (its loss stays at chance). Found by
    trying the layer (a copy, so running estimates stay untouched) on four images that differ
    in scale and offset, so a norm registered by the user is judged the same way."""
    x = torch.randn(4, channels, height, width, generator=torch.Generator().manual_seed(0))
    x = x * torch.tensor([1.0, 2.0, 3.0, 0.5]).view(-1, 1, 1, 1) + torch.tensor([0.0, 1.0, -2.0, 3.0]).view(-1, 1, 1, 1)
    with torch.no_grad():
        pooled = copy.deepcopy(norm).train()(x).mean((2, 3))
    return bool(torch.allclose(pooled, pooled[:1].expand_as(pooled), atol=1e-4))


class NormNet(nn.Sequential):
    """Logits for a batch of normalized images; layers named after the seed's C1..c11 plan."""

    def __init__(self, variant: Variant, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0):
        plan = plan_for(input_shape)
        check_groups(variant, plan)
        channels, height, width = input_shape
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        conv_index = pool_index = 0
        for index, step in enumerate(plan):
            if step[0] == "P":
                pool_index += 1
                layers[f"P{pool_index}"] = nn.MaxPool2d(2)
                height, width = height // 2, width // 2
                continue
            conv_index += 1
            kind, out = step
            if kind == "C":
                # Before global average pooling, a norm that would pool to a constant goes before the ReLU.
                relu_last = index == len(plan) - 1 and pools_to_constant(make_norm(variant, out, height, width), out, height, width)
                layers[f"C{conv_index}"] = ConvBlock(channels, out, variant, height, width, dropout, relu_last)
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
    if not variant.groups:
        return
    widths = [step[1] for step in plan if step[0] == "C"]
    common = math.gcd(*widths)
    if common % variant.groups:
        raise UserError(
            f"{variant.norm}:{variant.groups} does not divide every layer's channel count ({', '.join(map(str, sorted(set(widths))))})",
            f"use {variant.norm}:G with G one of {', '.join(map(str, norms.divisors(common)))}",
        )


class _Misfit(nn.Identity):
    """Stands where a norm_layer(channels) the group count does not divide was asked for, until the
    model is built and the layer's name is known for the error."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels


def norm_layer_for(variant: Variant):
    """``norm_layer(num_channels)`` for a user's model: the variant's layer."""
    def norm_layer(num_channels: int, *args, **kwargs) -> nn.Module:
        if variant.groups and num_channels % variant.groups:
            return _Misfit(num_channels)
        return make_norm(variant, num_channels)
    return norm_layer


def load_model_function(spec: str):
    """``pkg.module:function`` -> the function, every failure in one line."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--model {spec!r} is not module:function", "write e.g. --model mypackage.nets:resnet_tiny")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any failure to import is their input, in one line
        raise UserError(f"cannot import {module_name!r} for --model {spec} ({type(exc).__name__}: {exc})",
                        "check the module is on PYTHONPATH (or in the current folder) and imports cleanly") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise UserError(f"module {module_name!r} has no function {attr!r} (--model {spec})",
                        "name a function taking (norm_layer, in_channels, num_classes)")
    return function


def user_model(spec: str, variant: Variant, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The user's function called as ``function(norm_layer, in_channels, num_classes)`` and tried
    on two blank images of ``shape``: a model that cannot train on this dataset is refused here,
    in one line, not by a traceback from the first training step."""
    fix = f"fix {spec}: it is called as function(norm_layer, in_channels, num_classes) and must return an nn.Module"
    calls = []
    norm_layer = norm_layer_for(variant)

    def counted(*args, **kwargs):
        calls.append(args)
        return norm_layer(*args, **kwargs)
    try:
        model = load_model_function(spec)(counted, shape[0], num_classes)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"--model {spec} raised {type(exc).__name__} ({str(exc).splitlines()[0][:200] if str(exc) else ''})", fix) from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {spec} returned {type(model).__name__}, not an nn.Module", fix)
    for path, module in model.named_modules():
        if isinstance(module, _Misfit):
            norms.check_groups(variant, module.channels, f" of layer {path} in --model {spec}")
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"--model {spec} has no trainable parameters", "return a model with weights to train")
    if variant.ws:
        swap(model, lambda m: type(m) is nn.Conv2d, lambda path, conv: WSConv2d.from_conv(conv))
    check_output(model, spec, shape, num_classes)
    if not calls:
        # Every variant would be this one net: a comparison of identical runs, with names on them.
        raise UserError(f"--model {spec} never calls norm_layer, so every variant would train the same net",
                        "build each normalization layer of your net as norm_layer(channels)")
    return model


def check_output(model: nn.Module, spec: str, shape: tuple[int, int, int], num_classes: int) -> None:
    """The model maps a batch of 2 images of ``shape`` to 2 x num_classes logits (in eval mode,
    so no running statistics change)."""
    x = torch.zeros(2, *shape)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise UserError(f"--model {spec} fails on a batch of 2 images of {'x'.join(map(str, shape))} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''})",
                        "make it take N x in_channels x H x W images of this dataset") from None
    finally:
        model.train(was_training)
    if not (torch.is_tensor(out) and tuple(out.shape) == (2, num_classes)):
        got = f"a tensor of shape {tuple(out.shape)}" if torch.is_tensor(out) else type(out).__name__
        raise UserError(f"--model {spec} returns {got} for 2 images; expected 2 x {num_classes} logits, one per class",
                        "end the model with a layer of num_classes outputs")


def swap(model: nn.Module, match, make) -> list[tuple[str, nn.Module, nn.Module]]:
    """Replace, in place, every submodule ``match`` accepts by ``make(old)``; all are made before
    any is set, so a refusal leaves the model as it was. A module found at two paths is replaced at
    both by one new module (it stays shared), and each new module is in its old one's mode: a
    model in eval mode got layers in training mode, whose output then depended on the batch."""
    found = [(path, module) for path, module in model.named_modules(remove_duplicate=False) if path and match(module)]
    made: dict[int, nn.Module] = {}
    for path, old in found:
        if id(old) not in made:
            made[id(old)] = make(path, old).train(old.training)
    done = [(path, old, made[id(old)]) for path, old in found]
    for path, old, new in done:
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, new)
    return done


def convert(model: nn.Module, variant: Variant | str) -> list[tuple[str, nn.Module, nn.Module]]:
    """Swap every BatchNorm2d of ``model`` (and its subclasses; BatchNorm1d and others stay) for the variant's layer,
    in place, and with +ws every Conv2d for its weight-standardized form; returns (module path,
    old, new) for each replacement. New norm layers start fresh (weight 1, bias 0): BatchNorm's
    learned scale and shift were fitted to other statistics."""
    if not isinstance(model, nn.Module):
        raise UserError(f"convert takes a torch.nn.Module, got {type(model).__name__}", "pass the model itself, e.g. convert(net, 'gn:4')")
    variant = Variant.parse(variant)

    def replace(path, old):
        norms.check_groups(variant, old.num_features, f" of layer {path}")
        new = make_norm(variant, old.num_features)
        like = next(iter([*old.parameters(), *old.buffers()]), None)   # the device and dtype it had
        return new if like is None else new.to(like)

    done = swap(model, lambda m: isinstance(m, nn.BatchNorm2d), replace)     # subclasses of it too
    if variant.ws:
        done += swap(model, lambda m: type(m) is nn.Conv2d, lambda path, conv: WSConv2d.from_conv(conv))
    return done


def build_model(variant: Variant | str, dataset: str = "cifar10", dropout: float = 0.0, model: str | None = None) -> nn.Module:
    """A fresh model for ``dataset`` with the variant's normalization: the seed plan for its shape,
    or ``model`` ("pkg.module:function") built with the variant's norm_layer."""
    if isinstance(variant, str):
        variant = Variant.parse(variant)
    info = dataset_info(dataset)
    if model:
        return user_model(model, variant, info.shape, len(info.classes))
    return NormNet(variant, info.shape, len(info.classes), dropout)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
