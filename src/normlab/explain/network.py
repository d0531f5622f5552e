"""The explanation for a run's own net: at every norm layer, how many means each norm computes
per training step at the run's batch size, over how many values each, and its parameters."""

from __future__ import annotations

import torch

from ..data import dataset_info
from ..models import build_model
from .. import norms
from ..variants import Variant
from . import stats


def norm_sites(variant: Variant, dataset: str, model: str | None = None) -> list[dict]:
    """Each norm layer of the variant's net: its name, the C x H x W it normalizes, its parameters."""
    info = dataset_info(dataset)
    model = build_model(variant, info.name, model=model).eval()
    sites, hooks = [], []
    for name, module in model.named_modules():
        if hasattr(module, norms.TAG):   # built for the variant (a user model's own BatchNorm1d is not)
            def record(mod, inputs, _output, name=name):
                _, c, h, w = inputs[0].shape
                sites.append({"layer": name, "channels": c, "height": h, "width": w,
                              "params": sum(p.numel() for p in mod.parameters())})
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(torch.zeros(1, *info.shape))
    for hook in hooks:
        hook.remove()
    return sites


def norm_of(variant: Variant | str) -> Variant:
    """The variant without L1: bn and bn+l1 normalize the same way."""
    v = Variant.parse(variant) if isinstance(variant, str) else variant
    return Variant(v.norm, v.groups, ws=v.ws)


def net_table(dataset: str, variants, batch_size: int, model: str | None = None) -> dict:
    """Rows per norm layer, columns per distinct norm of the run (L1 variants fold into theirs)."""
    distinct = list(dict.fromkeys(norm_of(v) for v in variants))
    columns = {}
    for v in distinct:
        if v.normalizes and norms.lookup(v.norm).facts:
            columns[str(v)] = [{**site, **stats.layout(v.norm, batch_size, site["channels"], site["height"], site["width"],
                                                       v.groups)} for site in norm_sites(v, dataset, model)]
    # Each column headed by every variant it stands for: bn+l1 alone was headed `bn`, and beside bn it vanished.
    labels = {str(v): ", ".join(f"`{x}`" for x in dict.fromkeys(map(str, variants)) if norm_of(x) == v) for v in distinct}
    return {"dataset": dataset_info(dataset).title, "batch_size": batch_size, "columns": columns, "labels": labels,
            "without_norm": [str(v) for v in distinct if not v.normalizes],
            "unknown": [str(v) for v in distinct if v.normalizes and not norms.lookup(v.norm).facts]}


def table_markdown(table: dict, level: int) -> str:
    columns = table["columns"]
    batch = table["batch_size"]
    out = [f"{'#' * level} In this run's net: {table['dataset']}, batch size {batch}", ""]
    unknown = [f"`{n}`: explain does not know this norm (registered without explain facts), so its statistics "
               "are not counted here." for n in table.get("unknown", [])]
    if not columns:
        return "\n".join(out + unknown + ["No variant of this run has statistics to count.", ""])
    first = next(iter(columns.values()))
    out += [f"The net has {len(first)} normalization layers. Per layer and training step "
            f"(every training batch holds {batch} images: the last partial batch of an epoch is dropped), "
            "each norm computes this many means and variances, each over this many values, with these parameters:", ""]
    names = list(columns)
    label = {n: table.get("labels", {}).get(n, f"`{n}`") for n in names}
    out.append("| layer | C x H x W | " + " | ".join(f"{label[n]} means x values each | {label[n]} params" for n in names) + " |")
    out.append("|---|---|" + "---:|---:|" * len(names))
    for i, site in enumerate(first):
        cells = [f"{columns[n][i]['count']:,} x {columns[n][i]['values_each']:,} | {columns[n][i]['params']:,}" for n in names]
        out.append(f"| {site['layer']} | {site['channels']}x{site['height']}x{site['width']} | " + " | ".join(cells) + " |")
    totals = [f"{sum(c['count'] for c in columns[n]):,} means | {sum(c['params'] for c in columns[n]):,}" for n in names]
    out.append("| all norm layers | | " + " | ".join(totals) + " |")
    fewest = "; ".join(f"{label[n]} {min(c['values_each'] for c in columns[n]):,} "
                       f"({min(columns[n], key=lambda c: c['values_each'])['layer']})" for n in names)
    out += ["", f"Fewest values behind one mean: {fewest}."]
    batched = [n for n in names if Variant.parse(n).depends_on_batch]
    if batched:
        who = " and ".join(label[n] for n in batched)
        out.append(f"{who}: the count of values grows with the batch size and the statistics mix the images of a "
                   "batch; in evaluation the running estimates are used instead." + (
                       " The other norms compute the same statistics per image whatever the batch, in training and "
                       "in evaluation." if len(batched) < len(names) else ""))
    if any(Variant.parse(n).norm == "frn" for n in names):
        out.append("`frn` subtracts no mean: its count is of mean squares (one per image and channel), "
                   "which it divides by.")
    if table["without_norm"]:
        out.append(f"{', '.join(f'`{n}`' for n in table['without_norm'])}: no normalization layers.")
    return "\n".join(out + unknown + [""])


def explanation_markdown(dataset: str, variants, batch_size: int, figure: str | None = None, level: int = 2,
                         model: str | None = None) -> str:
    """(a) the worked default example, verified against PyTorch; (b) the table for the run's net.
    ``figure``: a path, relative to the report, of the picture ``draw_figure`` wrote, to embed."""
    from . import explain
    from .render import to_markdown
    return to_markdown(explain(), level, figure) + "\n" + table_markdown(net_table(dataset, variants, batch_size, model), level + 1)
