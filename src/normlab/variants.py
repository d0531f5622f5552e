"""A variant names one model configuration: which normalization, and its modifiers.

Grammar: ``NORM[:GROUPS][+ws][+l1[=LAMBDA]]``, e.g. ``bn``, ``gn:8``, ``ln``, ``bn+l1``,
``gn:8+ws``, ``gn:4+l1=5e-5``. NORM is a name or alias of the norm registry (norms.py), which
also says which norms take a group count; ``+ws`` standardizes the conv weights (Qiao et al.
2019), ``+l1`` adds L1 on the weights to the loss.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from . import norms
from .errors import UserError

DEFAULT_GROUPS = norms.NORMS["gn"].groups  # gn without a count (the registry says)
DEFAULT_L1 = 1e-5
DEFAULT_VARIANTS = "bn,ln,gn,bn+l1"
GRAMMAR = "write NORM[:GROUPS][+ws][+l1[=LAMBDA]], e.g. bn, gn:8, ln, bn+l1, gn:8+ws, gn:4+l1=5e-5"

_PATTERN = re.compile(r"^(?P<norm>[a-z][a-z0-9_-]*)(?::(?P<groups>[^+]*))?(?P<mods>(?:\+[^+]*)*)$")
_MODIFIER = re.compile(r"^(?:(?P<ws>ws)|(?P<l1>l1)(?:=(?P<lam>.*))?)$")


@dataclass(frozen=True, order=True)
class Variant:
    norm: str
    groups: int | None = None
    l1: float = 0.0
    ws: bool = False

    @staticmethod
    def parse(text: str) -> "Variant":
        if isinstance(text, Variant):
            return text
        if not isinstance(text, str):
            raise UserError(f"variant {text!r} is not a name", GRAMMAR)
        spec = text.strip().lower()
        match = _PATTERN.match(spec)
        # "+" separates modifiers, except in an exponent: gn+l1=1e+30.
        mods = [_MODIFIER.match(m) for m in re.split(r"(?<![0-9.]e)\+", match["mods"])[1:]] if match else [None]
        if not match or not all(mods):
            raise UserError(f"cannot read variant {text!r}", GRAMMAR)
        entry = norms.lookup(match["norm"])
        norm, groups = entry.name, entry.groups
        if match["groups"] is not None:
            if entry.groups is None:
                takers = [n.name for n in norms.NORMS.values() if n.groups]
                raise UserError(f"only {', '.join(takers)} takes a group count, not {norm!r} (in {text!r})",
                                f"write {norm} or {takers[0]}:{match['groups']}")
            if not match["groups"].isdigit() or int(match["groups"]) < 1:
                raise UserError(f"group count {match['groups']!r} in {text!r} is not a positive integer", f"write e.g. {norm}:4")
            groups = int(match["groups"])
        l1, ws = 0.0, False
        for mod in mods:
            ws = ws or bool(mod["ws"])
            if mod["l1"]:
                l1 = DEFAULT_L1
                if mod["lam"] is not None:
                    try:
                        l1 = float(mod["lam"])
                    except ValueError:
                        l1 = math.nan
                    if not (math.isfinite(l1) and l1 > 0):
                        raise UserError(f"L1 strength {mod['lam']!r} in {text!r} is not a positive number", "write e.g. bn+l1=1e-5")
        return Variant(norm, groups, l1, ws)

    @property
    def normalizes(self) -> bool:
        return norms.lookup(self.norm).normalizes

    @property
    def depends_on_batch(self) -> bool:
        return norms.lookup(self.norm).batch

    def __str__(self) -> str:
        text = (self.norm if self.groups is None else f"{self.norm}:{self.groups}") + ("+ws" if self.ws else "")
        if self.l1:
            text += "+l1" if self.l1 == DEFAULT_L1 else f"+l1={self.l1:g}"
        return text

    @property
    def slug(self) -> str:
        """A file-name-safe form: ``gn:4+l1=5e-05`` -> ``gn4-l1-5e-05``."""
        text = (self.norm if self.groups is None else f"{self.norm}{self.groups}") + ("-ws" if self.ws else "")
        if self.l1:
            text += "-l1" if self.l1 == DEFAULT_L1 else f"-l1-{self.l1:g}"
        return text


def parse_variants(text: str) -> list[Variant]:
    """Parse a comma-separated list, refusing duplicates (they would overwrite each other's files)."""
    items = [p.strip() for p in text.split(",")]
    if not any(items):
        raise UserError("no variants given", f"pass e.g. --norms {DEFAULT_VARIANTS}")
    if not all(items):
        # "bn,,ln": a variant left out by a slip, or a typo; training the rest would hide it.
        raise UserError(f"the variants {text!r} have an empty entry", f"put one comma between two variants, e.g. {DEFAULT_VARIANTS}")
    variants = [Variant.parse(item) for item in items]
    seen: dict[Variant, str] = {}
    for item, variant in zip(items, variants):
        if variant in seen:
            raise UserError(f"variant {item!r} repeats {seen[variant]!r}", "list each variant once")
        seen[variant] = item
    return variants
