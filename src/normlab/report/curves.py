"""curves.png: loss and accuracy per epoch, test on the left, validation (when held out) and
train beside it, one colour per variant.

With several seeds a variant is drawn as the mean over its seeds with a min-max band, edged so
it stays visible when two seeds nearly agree. A run that diverged stops where it diverged
(marked with an x); one still training is drawn as far as it got. Losses are on a log axis: one
spike (a loss of 77 where the rest is below 2) would otherwise flatten every other curve.
Accuracy differences at the end of training are often a fraction of a point, lost on an axis
that also holds epoch 1, so a third row zooms into the second half of training.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import rc_context
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..storage import write_bytes
from .aggregate import VariantRuns, group_runs
from .style import FONT, new_figure, png_bytes, run_variants, variant_colors, variant_title

CURVES = "curves.png"
ZOOM_FROM_EPOCHS = 4                 # fewer epochs than this: nothing to zoom into
LOG_FROM_RATIO = 10                  # a loss panel whose largest value is 10x its smallest goes on a log axis


def loss_axis(ax, values: list[float]) -> None:
    """Log scale where one spike (a loss of 77 beside values below 2) would flatten the rest."""
    finite = [v for v in values if v > 0 and v == v and v != float("inf")]
    if finite and max(finite) > LOG_FROM_RATIO * min(finite):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("loss (log scale)")


def legend_label(group: VariantRuns, epochs_planned: int) -> str:
    seeds = len(group.runs)
    label = variant_title(group.variant) + (f", {seeds} seeds" if seeds > 1 else "")
    notes = []
    for run in group.diverged:
        notes.append(f"seed {run['seed']} {run['status']}" if seeds > 1 else run["status"])
    for run in group.unfinished:
        done = len(run.get("epochs", []))
        notes.append((f"seed {run['seed']} " if seeds > 1 else "") + f"{run['status']}, {done}/{epochs_planned} epochs")
    return label + (f": {'; '.join(notes)}" if notes else "")


def plot_curves(run, **axes):
    """The curves figure of a run (a matplotlib Figure; a notebook shows it as it is); of a sweep,
    at the point its ``axes`` name (``plot_curves(sweep, batch_size=32)``)."""
    run = run.at(**axes)
    variants = run_variants(run)
    colors = variant_colors(variants)
    groups = group_runs(run, variants)
    epochs_planned = int(run.config.get("epochs", 0)) or max((len(r.get("epochs", [])) for r in run.runs), default=1)
    longest = max((len(r.get("epochs", [])) for r in run.runs), default=0)
    zoom = max(epochs_planned, longest) >= ZOOM_FROM_EPOCHS
    zoom_from = max(epochs_planned, longest) // 2 + 1
    multi_seed = any(len(g.runs) > 1 for g in groups)

    with rc_context(FONT):
        panels = [("loss", "loss", False), ("acc", "accuracy (%)", False)] + \
                 ([("acc", "accuracy (%)", True)] if zoom else [])
        splits = [s for s in ("test", "val", "train") if any(g.curve(f"{s}_loss").epochs for g in groups)] or ["test"]
        fig = new_figure(6 * len(splits), 4.1 * len(panels) + 0.9)
        axes = fig.subplots(len(panels), len(splits), squeeze=False)
        handles = {}
        last_epoch = max(epochs_planned, longest)
        for col, split in enumerate(splits):          # validation and train beside test, row by row
            for row, (metric, ylabel, zoomed) in enumerate(panels):
                ax = axes[row][col]
                title = f"{'Validation' if split == 'val' else split.capitalize()} {ylabel.split(' ')[0]}"
                ax.set_title(title + (f", epochs {zoom_from}-{last_epoch} (zoomed)" if zoomed else ""))
                ax.set_xlabel("epoch")
                ax.set_ylabel(ylabel)
                if last_epoch <= 12:          # 1 epoch: a point at x = 1, not ticks 0.95-1.05
                    ax.set_xticks(range(1, last_epoch + 1))
                else:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if not zoomed:
                    ax.set_xlim(0.5, last_epoch + 0.5)
                ax.grid(True, alpha=0.3)
                for group in groups:
                    curve = group.curve(f"{split}_{metric}")
                    keep = [i for i, e in enumerate(curve.epochs) if not zoomed or e >= zoom_from]
                    if not keep:
                        continue
                    x = [curve.epochs[i] for i in keep]
                    color = colors[group.variant]
                    (line,) = ax.plot(x, [curve.mean[i] for i in keep], color=color, lw=2,
                                      marker="o" if len(x) <= 30 else None, ms=3.5)
                    if len(group.runs) > 1 and len(x) == 1:      # a band one epoch wide is a line: a bar
                        ax.vlines(x, [curve.low[i] for i in keep], [curve.high[i] for i in keep], color=color,
                                  lw=7, alpha=0.3)
                    elif len(group.runs) > 1:
                        ax.fill_between(x, [curve.low[i] for i in keep], [curve.high[i] for i in keep],
                                        facecolor=color, alpha=0.2, edgecolor=color, lw=0.8)
                    for r in group.diverged:
                        if r.get("epochs"):
                            last = r["epochs"][-1]
                            if not zoomed or last["epoch"] >= zoom_from:
                                ax.plot([last["epoch"]], [last[f"{split}_{metric}"]], marker="x", ms=10, mew=2.5,
                                        color=color, ls="none")
                    handles.setdefault(group.variant, line)
                if zoomed:
                    ax.set_xlim(zoom_from - 0.3, last_epoch + 0.3)
                if metric == "loss":
                    loss_axis(ax, [v for g in groups for c in [g.curve(f"{split}_loss")] for v in c.low + c.high])
        for group in groups:
            if group.variant not in handles:      # no epoch finished yet: still listed, with its state
                (handles[group.variant],) = axes[0][0].plot([], [], color=colors[group.variant], lw=2)
        labels = [legend_label(g, epochs_planned) for g in groups]
        fig.legend([handles[g.variant] for g in groups], labels, loc="outside lower center",
                   ncol=min(len(groups), 4), frameon=False)
        seeds = max(len(g.runs) for g in groups) if groups else 1
        band = f"\nline: mean over {seeds} seeds, shaded band: min–max across seeds" if multi_seed else ""
        fig.suptitle(f"{run_title(run)}: loss and accuracy per epoch{band}")
    return fig


def run_title(run) -> str:
    from ..data import dataset_info
    cfg = run.config
    title = dataset_info(run.dataset).title
    size = f", {cfg['train_size']:,} training images" if isinstance(cfg.get("train_size"), int) else ""
    return f"{title}{size}, batch {cfg.get('batch_size', '?')}"


def write_curves(run, folder: Path | None = None) -> Path:
    path = Path(folder or run.folder) / CURVES
    write_bytes(path, png_bytes(plot_curves(run)))
    return path
