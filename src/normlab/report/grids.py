"""misclassified-<variant>.png: the 10 most confidently wrong test images in a 5x2 grid.

The images come from the test set by the indices saved in misclassified.json, as stored
(uint8), so what a tile shows is exactly what the model was given, in the file's own
colours; nearest-neighbour enlargement keeps every pixel a sharp square.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import rc_context

from ..data import dataset_info
from ..errors import UserError
from ..storage import write_bytes
from ..variants import Variant
from .style import FONT, new_figure, png_bytes, run_variants, variant_colors, variant_title

ROWS, COLS = 5, 2                     # as the seeds ask: a 5x2 matrix per model


def grid_name(variant: str) -> str:
    return f"misclassified-{Variant.parse(variant).slug}.png"


def mistakes_of(run, variant: str) -> list[dict]:
    name = str(Variant.parse(variant))
    mistakes = run.misclassified.get(name)
    if mistakes is None:
        raise UserError(f"{run.folder} has no misclassified images for {name} (its run did not finish)",
                        "finish the run with normlab compare --resume, or pick a variant whose run is done")
    return mistakes


def check_test_set(run, test, mistakes: list[dict]) -> None:
    """Refuse a test set that is not the run's: the saved true labels must match it, or the
    tiles would show other images under the run's labels."""
    where = f"the test set in {test.source}"
    for m in mistakes:
        if not 0 <= m["index"] < len(test):
            raise UserError(f"misclassified.json names test image {m['index']}, but {where} has {len(test)}",
                            "pass the --data-dir the run was trained with")
        if int(test.labels[m["index"]]) != m["true"]:
            raise UserError(f"{where} is not the one {run.folder} was trained on (image {m['index']} is labelled "
                            f"{int(test.labels[m['index']])} there, {m['true']} in misclassified.json)",
                            "pass the --data-dir the run was trained with")


def plot_misclassified(run, variant: str, test=None, data_dir=None, **axes):
    """The grid figure of one variant (a matplotlib Figure). ``test``: the run's test set, if
    already loaded; otherwise it is read from ``data_dir`` or where the run found it. In a sweep,
    ``axes`` name the point (``plot_misclassified(sweep, "bn", batch_size=32)``)."""
    run = run.at(**axes)
    name = str(Variant.parse(variant))
    mistakes = mistakes_of(run, name)
    test = test if test is not None else run.test_set(data_dir)
    info = dataset_info(run.dataset)
    color = variant_colors(run_variants(run)).get(name, "black")
    check_test_set(run, test, mistakes)

    with rc_context(FONT):
        # Tiles of about 1.8 inches: a 28x28 image gets ~7 screen pixels per pixel at 110 dpi.
        fig = new_figure(5.6, 12.2)
        axes = fig.subplots(ROWS, COLS, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(mistakes):
                ax.set_facecolor("#f2f2f2")
                ax.text(0.5, 0.5, "no further\nmistake", ha="center", va="center", color="#666666", transform=ax.transAxes)
                continue
            m = mistakes[k]
            image = test.images[m["index"]]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(f"pred: {info.classes[m['pred']]} / true: {info.classes[m['true']]}\n"
                         f"confidence {100 * m['confidence']:.1f}%  (#{m['index']})", fontsize=10)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2.5)
        shown = min(len(mistakes), ROWS * COLS)
        what = f"the {shown} most confidently wrong" if shown == ROWS * COLS else f"all {shown} wrong"
        seed = run.record(name)["seed"]
        fig.suptitle(f"{variant_title(name)} on {info.title}:\n{what} test images", fontsize=13)
        fig.supxlabel(f"seed {seed}'s checkpoint; each tile: predicted / true class,\n"
                      f"the model's confidence in its prediction, test-set index", fontsize=10, color="#444444")
        fig.get_layout_engine().set(h_pad=0.08, w_pad=0.1)
    return fig


def write_grids(run, test=None, data_dir=None, folder: Path | None = None) -> dict[str, Path]:
    """One PNG per variant that has misclassified images; returns {variant: path}."""
    folder = Path(folder or run.folder)
    written = {}
    mistakes = run.misclassified
    variants = [v for v in run_variants(run) if v in mistakes]
    if variants and test is None:
        test = run.test_set(data_dir)
    for variant in variants:
        path = folder / grid_name(variant)
        write_bytes(path, png_bytes(plot_misclassified(run, variant, test)))
        written[variant] = path
    return written
