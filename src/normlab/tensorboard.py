"""`--tensorboard`: each run's per-epoch numbers (and the finished figures) as TensorBoard event files.

results.json stays the source of truth; the event files are a view of it for people who watch
training in TensorBoard. They live under ``<run folder>/tensorboard/<run key>/`` (one folder per
run, so TensorBoard lists every variant and seed as its own run), are written as each epoch
finishes, and are rebuilt from results.json by ``write_events`` (what `normlab report` calls).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .storage import own_folder, read_manifest

FOLDER = "tensorboard"
SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


def summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package, which is not installed",
                        "pip install tensorboard (or normlab's `tensorboard` extra), or drop --tensorboard") from None
    return SummaryWriter


def tag(name: str) -> str:
    """'val_acc' -> 'accuracy/val', so TensorBoard puts train, val and test of one metric in one chart."""
    split, _, metric = name.partition("_")
    return "lr" if name == "lr" else f"{'accuracy' if metric == 'acc' else metric}/{split}"


class EventLog:
    """One SummaryWriter per run key, opened on first use; ``epoch(key, record)`` logs one epoch,
    ``epochs(key, epochs)`` those of a run's epochs not logged yet (``logged``: how many a
    resumed run's earlier process already wrote)."""

    def __init__(self, folder: Path, logged: dict[str, int] | None = None):
        self.folder = Path(folder) / FOLDER
        self.writer_class = summary_writer()
        self.writers: dict = {}
        self.logged = dict(logged or {})

    def writer(self, key: str):
        if key not in self.writers:
            self.writers[key] = self.writer_class(log_dir=str(self.folder / key))
            # The event file is not written through storage.py: list it in the folder's manifest
            # so that --overwrite may remove it (it removes nothing it did not write).
            own_folder(self.folder.parent, [p.relative_to(self.folder.parent).as_posix()
                                            for p in (self.folder / key).glob("events.out.tfevents.*")])
        return self.writers[key]

    def epochs(self, key: str, epochs: list[dict]) -> None:
        for epoch in epochs[self.logged.get(key, 0):]:
            self.epoch(key, epoch)
        self.logged[key] = len(epochs)

    def epoch(self, key: str, epoch: dict) -> None:
        writer = self.writer(key)
        for name in SCALARS:
            if isinstance(epoch.get(name), (int, float)):
                writer.add_scalar(tag(name), epoch[name], global_step=int(epoch["epoch"]))
        writer.flush()

    def figure(self, key: str, name: str, png: Path) -> None:
        import numpy as np
        from matplotlib.image import imread
        image = imread(png)[..., :3]               # RGBA -> RGB, floats in [0, 1]
        self.writer(key).add_image(name, np.ascontiguousarray(image), dataformats="HWC")

    def figures(self, folder: Path) -> None:
        """The run folder's finished figures, as images of a "figures" run: the PNGs normlab wrote
        there (its manifest lists them), not any other file of that name in the folder."""
        written = read_manifest(folder) or set()
        for png in sorted(Path(folder).glob("*.png")):
            if png.name in written:
                self.figure("figures", png.stem, png)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def written_events(folder: Path) -> list[str]:
    """The event files normlab wrote under ``folder``/tensorboard (relative names, from its manifest)."""
    return sorted(n for n in read_manifest(folder) or () if n.startswith(FOLDER + "/") and "/events.out.tfevents." in n)


def write_events(folder: Path, results: dict) -> Path:
    """Every run's epochs of ``results`` and the folder's figures as event files under
    ``folder``/tensorboard, replacing the event files normlab wrote there before (and only those:
    an event file of yours in that folder stays)."""
    log = EventLog(folder)
    for name in written_events(folder):
        (Path(folder) / name).unlink(missing_ok=True)
    for run in results["runs"]:
        log.epochs(run["key"], run["epochs"])
    log.figures(folder)
    log.close()
    return log.folder
