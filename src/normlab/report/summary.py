"""Layer tables and parameter counts (torchinfo), with each norm's share of the parameters."""

from __future__ import annotations

import re

import torchinfo

from ..data import dataset_info
from ..models import build_model, count_params
from ..norms import is_norm_layer
from ..variants import Variant


def norm_params(model) -> int:
    return sum(p.numel() for m in model.modules() if is_norm_layer(m) for p in m.parameters(recurse=False))


def variant_summary(variant: Variant, dataset: str, model: str | None = None) -> dict:
    info = dataset_info(dataset)
    model = build_model(variant, info.name, model=model)          # a --model of yours, or normlab's net
    # One image in: sizes and mult-adds then read per image, whatever the training batch.
    table = torchinfo.summary(model, input_size=(1, *info.shape), col_names=("output_size", "num_params"),
                              row_settings=("var_names",), mode="eval", verbose=0, depth=3)
    total, norm = count_params(model), norm_params(model)
    # torchinfo 1.8 on Python 3.11 prints its unit enum ("mult-adds (Units.MEGABYTES)"); show its value, "(M)".
    text = re.sub(r"Units\.(\w+)", lambda m: torchinfo.Units[m[1]].value, str(table))
    return {"variant": str(variant), "params": total, "norm_params": norm, "norm_share": norm / total, "table": text}


def summary_rows(variants: list[Variant], dataset: str, model: str | None = None) -> list[dict]:
    return [variant_summary(v, dataset_info(dataset).name, model) for v in variants]


def summary_text(variants: list[Variant], dataset: str, rows: list[dict] | None = None, model: str | None = None) -> str:
    """The text of summary.txt; ``rows`` from summary_rows when already computed."""
    info = dataset_info(dataset)
    parts = [f"normlab summary: {info.title}, input {'x'.join(map(str, info.shape))}, {len(info.classes)} classes"
             + (f", --model {model}" if model else ""), ""]
    rows = rows if rows is not None else summary_rows(variants, info.name, model)
    width = max(len(r["variant"]) for r in rows)
    parts.append(f"{'variant':<{width}}  {'params':>8}  {'in norms':>8}  share")
    for r in rows:
        parts.append(f"{r['variant']:<{width}}  {r['params']:>8,}  {r['norm_params']:>8,}  {100 * r['norm_share']:5.1f}%")
    for r in rows:
        parts += ["", f"== {r['variant']} ==", r["table"]]
    return "\n".join(parts) + "\n"
