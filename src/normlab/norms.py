"""The norm registry: one entry per normalization, read by variants.py (names, aliases, group
counts), models.py (the layer) and explain (the words and the hand computation). A new norm is
one entry: `register_norm(...)` from user code, or a package's `normlab.norms` entry point.

Every module asks ``make_norm`` for a layer and never names a norm class, so a model called
"gn:4" holds GroupNorm(4, C) and nothing else can slip in (the first seed's LayerNorm and
GroupNorm nets were BatchNorm nets under other names). No torch at import: variants read this
to answer input errors before PyTorch loads.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from dataclasses import dataclass, replace as with_fields
from typing import Callable

from .errors import UserError

EPS = 1e-5                # PyTorch's default eps for BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm
FRN_EPS = 1e-6            # FilterResponseNorm2d's, the paper's
RMAX, DMAX = 3.0, 5.0     # BatchRenorm2d's final clips, the paper's
# brn's warm-up, in steps: plain BN for HOLD, then the clips relaxed linearly over RELAX (the paper:
# 5k and 25k-40k of 130k+ steps). Measured on Fashion-MNIST, 4,000 training images, 2 seeds, mean
# test accuracy (docs/norms.md has the commands): fixed clips from step 0 cost 4.2 points against
# bn at batch 128 (80.7% vs 84.95%, 320 steps) and 30 at batch 4 (45.5% vs 75.9%, 1,800 steps, lr
# 0.1); 500/2,000 gave 71.1% at batch 4 and is bn through a 320-step run; 50/200 did not help
# (82.75% at 128, 33.0% at batch 4; one seed each).
HOLD, RELAX = 500, 2000
# brn's running-average rate. BatchNorm's 0.1 averages its running estimates over about 10 steps,
# which at batch 2 are 20 images: r and d then correct toward noise. Measured before 0.2.0 (the docs/sweeps.md
# sweep cells, Fashion-MNIST 4,000 images, 20 epochs, 3 seeds, test error): 0.01 gave 16.07% at
# batch 2 and 14.65% at 4 against 21.25% and 17.33% with 0.1, and 12.9-14.7% at batch 8-128 against
# 12.7-14.3%. bn itself does not gain from it (18.68% and 14.18% at batch 2 and 4 against 18.00% and
# 13.73%), so bn keeps PyTorch's 0.1.
BRN_MOMENTUM = 0.01
WORDS = {"N": "sample", "C": "channel", "G": "group"}
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ENTRY_POINTS = "normlab.norms"


def _standardize(x, s):
    return (x - s.mean) / s.std


@dataclass(frozen=True)
class Facts:
    """What explain needs to work a norm by hand. ``per``: the dimensions that index one
    statistic (("C",) for BatchNorm, ("N", "G") for GroupNorm); every statistic covers whole
    H x W planes. ``hand(x, statistic)``: the output for the values of one statistic, from its
    mean, std = sqrt(var + eps) and mean_square, with weight 1 and bias 0 (PyTorch's initial values)."""
    per: tuple[str, ...]
    formula: str = "y = (x - mean) / sqrt(var + eps)"
    hand: Callable = _standardize
    params: Callable[[int, int, int], int] = lambda c, h, w: 2 * c
    params_rule: str = "2*C"
    note: str = ""            # what it means in practice, one or two sentences
    shown_with: str = ""      # worked beside another norm rather than on its own (ln-elem beside ln)

    @property
    def axes(self) -> list[str]:
        """What one mean averages over: every dimension that does not index it (C stays under G)."""
        return [d for d in "NCHW" if d not in self.per]


@dataclass(frozen=True)
class Norm:
    name: str
    factory: Callable         # (channels, height, width, groups) -> nn.Module
    title: str = ""
    aliases: tuple[str, ...] = ()
    groups: int | None = None  # the default group count of a norm that takes one (gn:G); None: takes none
    batch: bool = False       # its training output depends on the other samples of the batch
    normalizes: bool = True   # False for "none": convs keep their bias
    relu: bool = True         # False: the layer ends in its own activation (FRN's TLU), no ReLU after it
    facts: Facts | None = None


NORMS: dict[str, Norm] = {}
ALIASES: dict[str, str] = {}
_plugins_loaded = False
_LOADED: dict[str, Norm] = {}  # the built-in and entry-point norms, which every worker process loads itself


def register_norm(name: str, factory: Callable | None = None, *, replace: bool = False, **fields) -> Norm:
    """Add a norm: ``factory(channels, height, width, groups) -> nn.Module`` and the Norm fields
    (title, aliases, groups, batch, relu, facts). Without ``facts``, explain says it does not know it."""
    norm = factory if isinstance(factory, Norm) else Norm(name, factory, **{"title": name, **fields})
    if not NAME.match(norm.name):
        raise UserError(f"cannot register norm {norm.name!r}", "use lower-case letters, digits, - and _, starting with a letter")
    if not callable(norm.factory):
        raise UserError(f"norm {norm.name!r} has no factory", "pass factory(channels, height, width, groups) -> nn.Module")
    owners = {key: ALIASES.get(key, key) for key in (norm.name, *norm.aliases) if key in NORMS or key in ALIASES}
    clash = {key: owner for key, owner in owners.items() if not (replace and owner == norm.name)}
    if clash:
        key, owner = next(iter(clash.items()))
        raise UserError(f"norm name {key!r} is already taken by {owner!r}", "choose another name, or pass replace=True")
    NORMS[norm.name] = norm
    ALIASES.update({alias: norm.name for alias in norm.aliases})
    return norm


def load_plugins() -> None:
    """Register the norms packages declare under the `normlab.norms` entry point group: each
    entry's object is a Norm, or a factory registered under the entry's name."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin is the user's input: say which, in one line
            raise UserError(f"cannot load norm {ep.name!r} from entry point {ep.value} ({type(exc).__name__}: {exc})",
                            "fix or uninstall the package that declares it") from None
        if ep.name not in NORMS:
            _LOADED[ep.name] = register_norm(ep.name, obj)


def lookup(name: str) -> Norm:
    load_plugins()
    name = ALIASES.get(name, name)
    if name not in NORMS:
        raise UserError(f"unknown norm {name!r}", f"choose one of {', '.join(NORMS)}")
    return NORMS[name]


class _Importable(pickle.Pickler):
    """pickle that refuses what a spawned worker or Ray task could not import: besides lambdas and
    local functions (which pickle refuses itself), anything defined in ``__main__``."""
    def persistent_id(self, obj):
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
            if getattr(obj, "__module__", None) == "__main__":
                raise pickle.PicklingError(f"{obj.__qualname__} is defined in __main__")


def shipped(names) -> list[Norm]:
    """The norms among ``names`` that this process registered at run time (a worker process
    re-imports normlab and would not know them), ready to pickle to local workers or Ray tasks.
    Refused at the door, in one line, when a worker could not import the factory."""
    out = []
    for norm in {lookup(name).name: lookup(name) for name in names}.values():
        if _LOADED.get(norm.name) is norm:
            continue
        norm = with_fields(norm, facts=None)     # explain runs in the driver; Facts' defaults are lambdas
        try:
            _Importable(io.BytesIO()).dump(norm)
        except Exception as exc:                 # pickle raises PicklingError, AttributeError or TypeError
            raise UserError(f"norm {norm.name!r} was registered in this process and worker processes cannot import "
                            f"its factory ({str(exc).splitlines()[0][:150]})",
                            "use --workers 1, define the factory in an importable module, or register it through "
                            f"the {ENTRY_POINTS} entry point") from None
        out.append(norm)
    return out


def install(norms: list[Norm]) -> None:
    """In a worker: register the norms the driver shipped."""
    for norm in norms:
        register_norm(norm.name, norm, replace=True)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_groups(variant, channels: int, where: str = "") -> None:
    if variant.groups and channels % variant.groups:
        raise UserError(f"{variant.norm}:{variant.groups} does not divide the {channels} channels{where}",
                        f"use {variant.norm}:G with G one of {', '.join(map(str, divisors(channels)))}")


TAG = "normlab_norm"


def make_norm(variant, channels: int, height: int | None = None, width: int | None = None):
    """The layer that normalizes a (N, channels, height, width) activation for this variant."""
    norm = lookup(variant.norm)
    check_groups(variant, channels)
    layer = norm.factory(channels, height, width, variant.groups)
    if norm.normalizes:
        setattr(layer, TAG, norm.name)  # so reports find the norm layers of any model, user norms included
    return layer


def is_norm_layer(module) -> bool:
    from torch import nn
    return hasattr(module, TAG) or isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _nn():
    from torch import nn
    return nn


def _layers():
    from . import layers
    return layers


def _need_size(h, w):
    if h is None or w is None:
        raise UserError("ln-elem needs each layer's height and width, which a user model's norm_layer(channels) "
                        "does not give", "use ln (one weight and bias per channel) on your own model")
    return [h, w]


def _brn_hand(x, s):
    """Its first training step: the running estimates at their start (mean 0, var 1), the clips
    closed by the warm-up (rmax 1, dmax 0) unless there is none."""
    rmax, dmax = (1.0, 0.0) if HOLD or RELAX else (RMAX, DMAX)
    sigma = math.sqrt(1.0 + EPS)
    r = min(max(s.std / sigma, 1 / rmax), rmax)
    d = min(max(s.mean / sigma, -dmax), dmax)
    return (x - s.mean) / s.std * r + d


for _norm in [
    Norm("bn", lambda c, h, w, g: _nn().BatchNorm2d(c), "BatchNorm", ("batchnorm",), batch=True,
         facts=Facts(("C",))),
    # One group: statistics over (C, H, W) of each sample, one weight and bias per channel, which
    # is what "LayerNorm" means for conv nets (GN paper, section 3.1).
    Norm("ln", lambda c, h, w, g: _nn().GroupNorm(1, c), "LayerNorm", ("layernorm",), facts=Facts(("N",))),
    Norm("gn", lambda c, h, w, g: _nn().GroupNorm(g, c), "GroupNorm", ("groupnorm",), groups=4,
         facts=Facts(("N", "G"))),
    Norm("in", lambda c, h, w, g: _nn().InstanceNorm2d(c, affine=True), "InstanceNorm", ("instancenorm",),
         facts=Facts(("N", "C"))),
    # A weight and bias per element: C*H*W each. Kept to show the seeds' parameter blow-up.
    Norm("ln-elem", lambda c, h, w, g: _nn().LayerNorm([c, *_need_size(h, w)]), "LayerNorm([C, H, W])",
         facts=Facts(("N",), params=lambda c, h, w: 2 * c * h * w, params_rule="2*C*H*W", shown_with="ln")),
    Norm("brn", lambda c, h, w, g: _layers().BatchRenorm2d(c, RMAX, DMAX, HOLD, RELAX, EPS, BRN_MOMENTUM), "BatchRenorm",
         ("batchrenorm", "batch-renorm"), batch=True,
         facts=Facts(("C",), "y = (x - mean) / sqrt(var + eps) * r + d, r = clip(sqrt(var + eps) / sqrt(running_var + eps), "
                           "1/rmax, rmax), d = clip((mean - running_mean) / sqrt(running_var + eps), -dmax, dmax); "
                           f"rmax = 1, dmax = 0 (plain BatchNorm) for the first {HOLD} training steps, then relaxed "
                           f"linearly to {RMAX:g} and {DMAX:g} over {RELAX} steps; running estimates updated at rate "
                           f"{BRN_MOMENTUM:g} (BatchNorm: 0.1)",
                     _brn_hand,
                     note="BatchNorm's statistics, corrected toward the running estimates by r and d (held constant in "
                          "the backward pass), so training sees what evaluation will (Ioffe 2017, the fix for BN at "
                          "small or non-i.i.d. batches). Worked here at the first step, running_mean 0 and running_var 1 "
                          "(their start values): the warm-up holds r = 1 and d = 0, so the output is BatchNorm's. With "
                          "the final clips these meaningless start values would give r = sqrt(var + eps) and d = mean "
                          "(where not clipped), so y = x: no normalization at all, why the clips open only later.")),
    Norm("frn", lambda c, h, w, g: _layers().FilterResponseNorm2d(c, FRN_EPS), "FilterResponseNorm", ("filterresponsenorm",),
         relu=False,
         facts=Facts(("N", "C"), "y = max(x / sqrt(mean(x^2) + eps) * weight + bias, tau)",
                     lambda x, s: (x / math.sqrt(s.mean_square + FRN_EPS)).clip(min=0.0),  # TLU, tau 0
                     lambda c, h, w: 3 * c, "3*C",
                     note=f"No mean is subtracted: each channel of each image is divided by its root mean square "
                          f"(eps {FRN_EPS:g}), and the TLU max(y, tau), tau learned (0 at start), replaces the ReLU "
                          "(Singh & Krishnan 2020). Independent of the batch.")),
    Norm("none", lambda c, h, w, g: _nn().Identity(), "no normalization", ("identity",), normalizes=False),
]:
    _LOADED[_norm.name] = register_norm(_norm.name, _norm)
