"""The explanation for a run's own net: at every norm layer, how many means each norm computes
per training step at the run's batch size, over how many values each, and its parameters."""

from __future__ import annotations

import torch

from ..data import dataset_info
from ..models import build_model
from ..norms import is_norm_layer
from ..variants import Variant
from . import stats


def norm_sites(variant: Variant, dataset: str) -> list[dict]:
    """Each norm layer of the variant's net: its name, the C x H x W it normalizes, its parameters."""
    info = dataset_info(dataset)
    model = build_model(variant, info.name).eval()
    sites, hooks = [], []
    for name, module in model.named_modules():
        if is_norm_layer(module):
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
    return Variant(v.norm, v.groups)


def net_table(dataset: str, variants, batch_size: int) -> dict:
    """Rows per norm layer, columns per distinct norm of the run (L1 variants fold into theirs)."""
    norms = [v for v in dict.fromkeys(norm_of(v) for v in variants) if v.normalizes]
    columns = {}
    for v in norms:
        cells = []
        for site in norm_sites(v, dataset):
            lay = stats.layout("ln" if v.norm == "ln-elem" else v.norm, batch_size, site["channels"], site["height"],
                               site["width"], v.groups)
            cells.append({**site, **lay})
        columns[str(v)] = cells
    return {"dataset": dataset_info(dataset).title, "batch_size": batch_size, "columns": columns,
            "without_norm": [str(v) for v in dict.fromkeys(norm_of(v) for v in variants) if not v.normalizes]}


def table_markdown(table: dict, level: int) -> str:
    columns = table["columns"]
    batch = table["batch_size"]
    out = [f"{'#' * level} In this run's net: {table['dataset']}, batch size {batch}", ""]
    if not columns:
        return "\n".join(out + ["No variant of this run normalizes, so there are no statistics to count.", ""])
    first = next(iter(columns.values()))
    out += [f"The net normalizes after each of its {len(first)} 3x3 convolutions. Per layer and training step "
            f"(every training batch holds {batch} images: the last partial batch of an epoch is dropped), "
            "each norm computes this many means and variances, each over this many values, with these parameters:", ""]
    names = list(columns)
    out.append("| layer | C x H x W | " + " | ".join(f"`{n}` means x values each | `{n}` params" for n in names) + " |")
    out.append("|---|---|" + "---:|---:|" * len(names))
    for i, site in enumerate(first):
        cells = [f"{columns[n][i]['count']:,} x {columns[n][i]['values_each']:,} | {columns[n][i]['params']:,}" for n in names]
        out.append(f"| {site['layer']} | {site['channels']}x{site['height']}x{site['width']} | " + " | ".join(cells) + " |")
    totals = [f"{sum(c['count'] for c in columns[n]):,} means | {sum(c['params'] for c in columns[n]):,}" for n in names]
    out.append("| all norm layers | | " + " | ".join(totals) + " |")
    fewest = "; ".join(f"`{n}` {min(c['values_each'] for c in columns[n]):,} "
                       f"({min(columns[n], key=lambda c: c['values_each'])['layer']})" for n in names)
    out += ["", f"Fewest values behind one mean: {fewest}."]
    if any(Variant.parse(n).depends_on_batch for n in names):
        out.append("BatchNorm's count of values grows with the batch size and its statistics mix the images of a "
                   "batch; in evaluation it uses its running estimates instead. The other norms compute the same "
                   "statistics per image whatever the batch, in training and in evaluation.")
    if table["without_norm"]:
        out.append(f"{', '.join(f'`{n}`' for n in table['without_norm'])}: no normalization layers.")
    return "\n".join(out + [""])


def explanation_markdown(dataset: str, variants, batch_size: int, figure: str | None = None, level: int = 2) -> str:
    """(a) the worked default example, verified against PyTorch; (b) the table for the run's net.
    ``figure``: a path, relative to the report, of the picture ``draw_figure`` wrote, to embed."""
    from . import explain
    from .render import to_markdown
    return to_markdown(explain(), level, figure) + "\n" + table_markdown(net_table(dataset, variants, batch_size), level + 1)
