"""A variant names one model configuration: which normalization, and whether L1 is added.

Grammar: ``NORM[:GROUPS][+l1[=LAMBDA]]``, e.g. ``bn``, ``gn:8``, ``ln``, ``bn+l1``,
``gn:4+l1=5e-5``. Only the names live here; which layer each name builds is ``norms.py``'s job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UserError

NORMS = {
    "bn": "BatchNorm: per channel, over the batch and all pixels",
    "gn": "GroupNorm: per sample and group of channels, over the group's pixels",
    "ln": "LayerNorm: per sample, over all channels and pixels (GroupNorm with 1 group)",
    "ln-elem": "LayerNorm([C, H, W]) with a weight and bias per element (the seeds' version)",
    "in": "InstanceNorm: per sample and channel, over its pixels",
    "none": "no normalization",
}
DEFAULT_GROUPS = 4
DEFAULT_L1 = 1e-5
DEFAULT_VARIANTS = "bn,ln,gn,bn+l1"

_PATTERN = re.compile(r"^(?P<norm>[a-z-]+)(?::(?P<groups>[^+]*))?(?:\+(?P<l1>l1)(?:=(?P<lam>.*))?)?$")


@dataclass(frozen=True, order=True)
class Variant:
    norm: str
    groups: int | None = None
    l1: float = 0.0

    @staticmethod
    def parse(text: str) -> "Variant":
        spec = text.strip().lower()
        match = _PATTERN.match(spec)
        if not match:
            raise UserError(
                f"cannot read variant {text!r}",
                "write NORM[:GROUPS][+l1[=LAMBDA]], e.g. bn, gn:8, ln, bn+l1, gn:4+l1=5e-5",
            )
        norm = match["norm"]
        if norm not in NORMS:
            raise UserError(f"unknown norm {norm!r} in variant {text!r}", f"choose one of {', '.join(NORMS)}")
        groups = None
        if match["groups"] is not None:
            if norm != "gn":
                raise UserError(f"only gn takes a group count, not {norm!r} (in {text!r})", f"write {norm} or gn:{match['groups']}")
            if not match["groups"].isdigit() or int(match["groups"]) < 1:
                raise UserError(f"group count {match['groups']!r} in {text!r} is not a positive integer", "write e.g. gn:4")
            groups = int(match["groups"])
        elif norm == "gn":
            groups = DEFAULT_GROUPS
        l1 = 0.0
        if match["l1"]:
            l1 = DEFAULT_L1
            if match["lam"] is not None:
                try:
                    l1 = float(match["lam"])
                except ValueError:
                    l1 = math.nan
                if not (math.isfinite(l1) and l1 > 0):
                    raise UserError(f"L1 strength {match['lam']!r} in {text!r} is not a positive number", "write e.g. bn+l1=1e-5")
        return Variant(norm, groups, l1)

    @property
    def normalizes(self) -> bool:
        return self.norm != "none"

    @property
    def depends_on_batch(self) -> bool:
        return self.norm == "bn"

    def __str__(self) -> str:
        text = self.norm if self.groups is None else f"{self.norm}:{self.groups}"
        if self.l1:
            text += "+l1" if self.l1 == DEFAULT_L1 else f"+l1={self.l1:g}"
        return text

    @property
    def slug(self) -> str:
        """A file-name-safe form: ``gn:4+l1=5e-05`` -> ``gn4-l1-5e-05``."""
        text = self.norm if self.groups is None else f"{self.norm}{self.groups}"
        if self.l1:
            text += "-l1" if self.l1 == DEFAULT_L1 else f"-l1-{self.l1:g}"
        return text


def parse_variants(text: str) -> list[Variant]:
    """Parse a comma-separated list, refusing duplicates (they would overwrite each other's files)."""
    items = [part for part in (p.strip() for p in text.split(",")) if part]
    if not items:
        raise UserError("no variants given", f"pass e.g. --norms {DEFAULT_VARIANTS}")
    variants = [Variant.parse(item) for item in items]
    seen: dict[Variant, str] = {}
    for item, variant in zip(items, variants):
        if variant in seen:
            raise UserError(f"variant {item!r} repeats {seen[variant]!r}", "list each variant once")
        seen[variant] = item
    return variants
