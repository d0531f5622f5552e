"""An experiment: a grid of variants x seeds x TrainConfig axes, trained into one run folder.

``normlab compare`` and ``train`` are a grid with one value per axis; ``normlab sweep --over
batch_size=2,8,32 --over lr=0.01,0.1`` is a grid with several. One folder lifecycle serves every
grid, in this order, and nothing is written before the first write step:

    check_experiment   everything that can be refused from the options alone
    load the data      limits applied, the test set must not be empty, data fingerprinted
    prepare_folder     (no writes) a new, empty folder; or the run to --resume, checked against
                       these settings, this data and its checkpoints; or --overwrite's refusals
    open_folder        lock it (workers too), list what it writes in its manifest, clear the
                       temp files a kill left, and on --overwrite remove only what normlab wrote
    train              every unfinished run by the executor (here, local workers, Ray);
                       results.json is rewritten by this process after every epoch or run

Learning rate of a batch-size sweep (when batch_size is an axis and lr is not): ``lr_scaling``
"linear" gives peak lr = lr x B / 128 (Goyal et al. 2017, "Accurate, Large Minibatch SGD"),
"sqrt" lr x sqrt(B / 128) (the square-root rule of adaptive updates, Malladi et al. 2022).
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import __version__
from .config import AUTO, NOT_AXES, TrainConfig
from .data import dataset_info, fingerprint, load_splits
from .data.split import holdout
from .errors import UserError
from .executors import Cell, CellResult, LocalExecutor, RayExecutor, Splits
from .models import build_model
from .norms import shipped
from .runs import (CHECKPOINTS, MISCLASSIFIED, PENDING, RESULTS, SCHEMA, SEARCH_FOLDERS, SEARCH_ROUND, checkpoint_path,
                   chosen_epoch, is_finished, limit, misclassified_key, most_confident_mistakes, read_misclassified,
                   read_results, save_results)
from .tensorboard import EventLog, summary_writer
from .storage import (LOCK_NAME, MANIFEST, TEMP_SUFFIX, WORKERS_LOCK_NAME, is_leftover, lock_folder, own_folder,
                      read_manifest, remove_leftovers, remove_written, unlock_folder, write_json)
from .checkpoints import read_checkpoint
from .train import check_batch, resolve_device
from .variants import Variant

REFERENCE_BATCH = 128
LR_SCALINGS = ("linear", "sqrt", "none")
# rule -> (the factor on the lr at batch B from its ratio B / REFERENCE_BATCH, that factor in words, source)
RULES = {"linear": (lambda ratio: ratio, "B / {ref}", "Goyal et al. 2017"),
         "sqrt": (math.sqrt, "sqrt(B / {ref})", "Malladi et al. 2022")}
SHORT = {"batch_size": "b"}                 # key parts: "b32-gn4-seed1", as sweeps always named them


@dataclass(frozen=True)
class Spec:
    """One run of the grid: a variant, a seed and one value per axis."""
    key: str
    variant: Variant
    seed: int
    axes: dict
    cfg: TrainConfig

    @property
    def label(self) -> str:
        return " ".join([str(self.variant), f"seed {self.seed}", *(f"{k}={v}" for k, v in self.axes.items())])


@dataclass
class Experiment:
    variants: list[Variant]
    cfg: TrainConfig                   # axes override its fields run by run
    out: Path
    axes: dict[str, list] = field(default_factory=dict)
    lr_scaling: str = "none"
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    executor: object = field(default_factory=LocalExecutor)
    tensorboard: bool = False          # also write each epoch as TensorBoard events (normlab.tensorboard)
    lrs: dict[str, float] = field(default_factory=dict)   # --lr auto: variant -> its searched peak lr (scaled like --lr)
    only: set | None = None            # --lr auto's second round: the (variant, lr) cells of the grid it trains
    search_round: int = 0              # --lr auto: which round of the search this grid is (0: a real experiment)

    def scaled(self) -> bool:
        return self.lr_scaling in RULES and "batch_size" in self.axes and "lr" not in self.axes

    def longest_epochs(self) -> int:
        """The epochs of the longest run: what --lr auto sizes its search by (epochs may be swept)."""
        return max(self.axes.get("epochs", [self.cfg.epochs]))

    def lr_factor(self, batch_size: int) -> float:
        return RULES[self.lr_scaling][0](batch_size / REFERENCE_BATCH)

    def specs(self) -> list[Spec]:
        out = []
        for values in itertools.product(*self.axes.values()):
            axes = dict(zip(self.axes, values))
            cfg = replace(self.cfg, **axes, seeds=1)
            for seed in self.cfg.seed_list():
                for variant in self.variants:
                    if self.only is not None and (str(variant), cfg.lr) not in self.only:
                        continue
                    lr = self.lrs.get(str(variant), self.cfg.peak_lr if self.scaled() else cfg.lr)
                    lr = lr * self.lr_factor(cfg.batch_size) if self.scaled() else lr
                    parts = [f"{SHORT.get(k, k)}{v}" for k, v in axes.items()] + [variant.slug, f"seed{seed}"]
                    key = "-".join(parts).replace("/", "_").replace(" ", "_")
                    out.append(Spec(key, variant, seed, axes, replace(cfg, seed=seed, lr=lr)))
        return out

    def config(self) -> dict:
        specs = self.specs()
        lr = "each variant's searched lr" if self.cfg.lr == AUTO else f"{self.cfg.peak_lr:g}"
        _, factor, source = RULES.get(self.lr_scaling, (None, "", ""))
        rule = (f"{self.lr_scaling} scaling: peak lr = {lr} x {factor.format(ref=REFERENCE_BATCH)} "
                f"({lr} at batch {REFERENCE_BATCH}; {source})") if self.scaled() else None
        return {**self.cfg.to_dict(), "variants": [str(v) for v in self.variants], "axes": self.axes,
                "lr_scaling": self.lr_scaling if self.scaled() else "none", "lr_rule": rule, "data_dir": self.data_dir,
                "momentum_used": "; ".join(dict.fromkeys(s.cfg.momentum_text() for s in specs)),
                "trust_used": trust_text(specs) if self.cfg.optimizer == "sgd" else None}


def trust_text(specs: list[Spec]) -> str:
    """The trust ratio the runs used (it may follow the batch size: TrainConfig.trust_used)."""
    sizes: dict[float, set] = {}
    for spec in specs:
        sizes.setdefault(spec.cfg.trust_used, set()).add(spec.cfg.batch_size)
    return "; ".join(f"trust ratio {t:g}{' (plain SGD)' if t == 0 else ''}"
                     + (f" at batch {', '.join(map(str, sorted(b)))}" if len(sizes) > 1 else "") for t, b in sizes.items())


def default_out(dataset: str, sweep: bool = False) -> Path:
    return Path("runs") / f"{'sweep-' if sweep else ''}{dataset_info(dataset).slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_experiment(exp: Experiment) -> None:
    """Everything that can be refused without reading data or writing files."""
    exp.cfg.validate()
    exp.cfg.dataset = dataset_info(exp.cfg.dataset).name
    if not exp.variants:
        raise UserError("--norms is empty", "pass e.g. --norms bn,gn,ln")
    if exp.resume and exp.overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it: not both",
                        "pass one of them")
    if exp.lr_scaling not in LR_SCALINGS:
        raise UserError(f"unknown --lr-scaling {exp.lr_scaling!r}", f"choose one of {', '.join(LR_SCALINGS)}")
    for name, values in exp.axes.items():
        if name in NOT_AXES or name not in exp.cfg.to_dict():
            raise UserError(f"--over {name}: not an axis", f"sweep a training option other than {', '.join(NOT_AXES)}")
        if not values or len(set(values)) != len(values):
            raise UserError(f"--over {name} must list distinct values", f"pass e.g. --over {name}=1,2")
        for value in values:                   # before specs(), whose lr scaling takes the root of a batch size
            replace(exp.cfg, **{name: value}).validate()
    if exp.cfg.model and (exp.cfg.dropout or "dropout" in exp.axes):
        raise UserError("--dropout is for normlab's own nets: a --model of yours is built by your function, "
                        "which gets no dropout", "drop --dropout, or put dropout in your model")
    if "lr" in exp.axes and (exp.cfg.lr == AUTO or AUTO in exp.axes["lr"]):
        raise UserError("--lr auto searches the learning rate itself, so lr cannot also be swept",
                        "drop --over lr=..., or pass a number to --lr")
    if not isinstance(exp.executor, RayExecutor):
        resolve_device(exp.cfg.device)         # a Ray cluster's GPUs need not be visible here
    if isinstance(exp.executor, RayExecutor) or exp.executor.workers > 1:
        shipped(v.norm for v in exp.variants)  # refuses a run-time norm that worker processes could not import
    train_size = min(dataset_info(exp.cfg.dataset).train_size, exp.cfg.train_limit or 10**9)
    for variant in exp.variants:
        build_model(variant, exp.cfg.dataset, model=exp.cfg.model)  # refuses a group count that does not divide the widths
    check_sizes(exp, train_size)
    if exp.tensorboard:
        summary_writer()                       # refuses --tensorboard without the package, before any write


def check_sizes(exp: Experiment, train_size: int) -> None:
    for spec in exp.specs():
        spec.cfg.validate()
        check_batch(spec.variant, spec.cfg.batch_size, train_size)


# ---- the folder ---------------------------------------------------------------------------------

def holds_only_leftovers(out: Path) -> bool:
    """True for an empty folder, or one that a run killed before its first results.json left:
    its manifest and lock files, an empty checkpoints/ folder, temp files of unfinished writes."""
    for path in out.iterdir():
        if path.name in SEARCH_FOLDERS and path.is_dir():
            continue                           # the --lr auto search of a run killed before its first results.json
        if path.name == CHECKPOINTS and path.is_dir():
            if not all(is_leftover(p) for p in path.iterdir()):
                return False
        elif not (is_leftover(path) or path.name in (LOCK_NAME, WORKERS_LOCK_NAME, MANIFEST)):
            return False
    return True


def prepare_folder(exp: Experiment) -> dict | None:
    """Check the out folder (writing nothing); return the results of the run being resumed, if any."""
    out = exp.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file", "choose a folder path for --out")
    if (out / RESULTS).exists() or (out / RESULTS).is_symlink():
        if exp.resume:
            previous = read_results(out)
            check_resumable(previous, exp)
            return previous
        if not exp.overwrite:
            raise UserError(f"{out} already holds a run", "pass --resume to continue it, --overwrite to replace it, or choose another --out")
    elif exp.resume:
        if not (out.is_dir() and (out / CHECKPOINTS).is_dir() and holds_only_leftovers(out)):
            raise UserError(f"--resume: {out} holds no run to resume", "drop --resume to start a new run there")
        return None
    elif not exp.overwrite and any((out / f / RESULTS).exists() for f in SEARCH_FOLDERS):
        # Killed in its --lr auto search: refused here, naming the folder the user gave, not the round's.
        raise UserError(f"{out} already holds a run (its --lr auto search began)",
                        "pass --resume to continue it, --overwrite to replace it, or choose another --out")
    if out.is_dir() and not holds_only_leftovers(out):
        if not exp.overwrite:
            raise UserError(f"{out} is not empty and holds no normlab run", "choose a new or empty folder for --out")
        if read_manifest(out) is None:
            raise UserError(f"--overwrite: {out} has no list of the files normlab wrote (a folder of yours, or "
                            f"of an older normlab), and normlab deletes nothing else",
                            "remove what you no longer need yourself, or choose another --out")
    if exp.overwrite and out.is_dir():
        check_overwritable(exp)
    return None


def check_overwritable(exp: Experiment) -> None:
    """--overwrite removes only what normlab wrote; a checkpoint it would not remove (a link, or a
    file the manifest does not list) would then be read as the new run's own: a replaced bn
    checkpoint of 1 epoch was 'resumed' and reported as a finished 2-epoch run."""
    written = read_manifest(exp.out) or set()
    for spec in exp.specs():
        path = checkpoint_path(exp.out, spec.key)
        name = path.relative_to(exp.out).as_posix()
        if path.is_symlink() or (path.exists() and not (path.is_file() and name in written)):
            raise UserError(f"--overwrite: {path} is not a checkpoint normlab wrote, so it would not be removed, "
                            f"and the new run would start from it", "move it out of the folder, or choose another --out")


def check_resumable(previous: dict, exp: Experiment) -> None:
    saved, wanted = previous["config"], exp.config()
    keys = [k for k in wanted if k not in ("data_dir", "lr_rule", "momentum_used", "trust_used", "variants", "axes")]   # derived
    # A run saved before an option existed trained with that option's default then (trust: 0.1 at
    # every batch size, before trust_used chose by batch size).
    defaults = {**TrainConfig().to_dict(), "trust": 0.1}
    # More seeds (same first seed) add runs next to the finished ones, as added variants do: a
    # 1-seed comparison grows to 3 for its significance tests without retraining seed 1.
    more_seeds = saved.get("seeds", 1) <= wanted["seeds"]
    check_added_values(exp.out, saved.get("axes", {}), wanted["axes"])

    def used(config: dict, k: str):
        """The value the runs train with: an option left to its default (None) as resolved."""
        value = config.get(k, defaults.get(k))
        if value is None and k == "lr":
            return TrainConfig(optimizer=config.get("optimizer", "sgd")).peak_lr
        if value is None and k == "pad":
            return dataset_info(exp.cfg.dataset).pad_for(None)
        if value is None and k == "trust":
            return config.get("trust_used")        # it follows the batch size: the ratios used, as words
        return value

    def shown(config: dict, k: str) -> str:
        default = config.get(k, defaults.get(k)) is None and used(config, k) is not None
        return f"the default ({used(config, k)})" if default else repr(used(config, k))

    def same(k: str) -> bool:
        if k == "seeds":
            return saved.get(k, 1) == wanted[k] or more_seeds
        if k == "trust" and (saved.get(k, defaults[k]) is None) != (wanted[k] is None):
            return saved.get("trust_used") == wanted["trust_used"]   # --trust 0.1 where the default was 0.1
        return saved.get(k, defaults.get(k)) == wanted[k] or used(saved, k) == used(wanted, k)

    differs = [f"{k} {shown(saved, k)} -> {shown(wanted, k)}" for k in keys if not same(k)]
    if differs:
        raise UserError(f"{exp.out} was run with other settings ({'; '.join(differs)})",
                        "resume with the same options (more --seeds or --norms are fine), or start a new run "
                        "with another --out")
    before, now = saved["variants"], wanted["variants"]
    if not set(before) <= set(now):
        # Added variants are trained next to the finished ones (e.g. brn added to a finished bn,gn,ln
        # sweep); a dropped one would lose its results from results.json, so that is refused.
        option = f"--norms {','.join(before)}" if len(before) > 1 else f"--norm {before[0]}"
        raise UserError(f"{exp.out} was run with other variants ({', '.join(before)} -> {', '.join(now)})",
                        f"resume with {option} (adding variants is fine, dropping one is not), or start a new run "
                        f"with another --out")


def check_added_values(out: Path, before: dict, now: dict) -> None:
    """A resumed grid may add values to an axis it swept (e.g. epochs 60 -> 30,60, a convergence
    check next to the finished runs); other axes, or a dropped value, would change or lose runs."""
    over = lambda axes: " ".join(f"--over {k}={','.join(map(str, v))}" for k, v in axes.items()) or "no --over"
    if list(before) != list(now) or any(not set(before[k]) <= set(now[k]) for k in before):
        raise UserError(f"{out} swept other values ({over(before)} -> {over(now)})",
                        f"resume with {over(before)}, or with more values of those axes (adding values is fine, "
                        f"dropping one is not), or start a new run with another --out")


def check_resumed_inputs(previous: dict, exp: Experiment, data: str, train, test) -> None:
    """The resumed run's data and checkpoints are the ones it was run with, before anything is written."""
    saved = previous["config"]
    if saved.get("data_fingerprint") != data:
        raise UserError(f"{exp.out} was run on other data ({saved.get('train_size')} training and {saved.get('test_size')} "
                        f"test images, {str(saved.get('data_fingerprint'))[:19]}...; this data has {len(train)} and "
                        f"{len(test)}, {data[:19]}...)",
                        "point --data-dir at the data it was run on, or start a new run with another --out")
    for spec in exp.specs():
        path = checkpoint_path(exp.out, spec.key)
        if path.exists():
            read_checkpoint(path, spec.variant, spec.seed, own_net=not exp.cfg.model)


def open_folder(exp: Experiment) -> None:
    """The first writes, once every check has passed: take the folder, clear what a killed run left."""
    out = exp.out
    try:
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".normlab-write-test.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write to {out} ({exc.strerror})", "make it writable or choose another folder with --out") from None
    lock_folder(out)
    # Temp files of writes that a kill interrupted: never a live process's, we hold the lock.
    remove_leftovers(out, out / CHECKPOINTS)
    if exp.overwrite and not exp.resume:
        remove_written(out)
    own_folder(out, [f"{CHECKPOINTS}/{spec.key}.pt" for spec in exp.specs()])


# ---- training -----------------------------------------------------------------------------------

def environment(device) -> dict:
    import numpy as np
    import torch
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def plan_line(exp: Experiment, specs: list[Spec]) -> str:
    grid = " x ".join([plural(len(exp.variants), "variant"), plural(exp.cfg.seeds, "seed"),
                       *(f"{len(v)} {k}" for k, v in exp.axes.items())])
    epochs = (f"{', '.join(map(str, exp.axes['epochs']))} epochs" if "epochs" in exp.axes else plural(exp.cfg.epochs, "epoch"))
    return f"normlab: {plural(len(specs), 'run')} ({grid}) of {exp.cfg.dataset}, {epochs} each, into {exp.out}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def run_experiment(exp: Experiment, log=print, then=None) -> dict:
    """Train every run of the grid not finished yet; ``then(out)`` (the report) runs while the
    folder is still locked. Returns the results (also in ``exp.out``/results.json)."""
    check_experiment(exp)
    specs = exp.specs()
    cfg = exp.cfg
    train, test = load_splits(cfg.dataset, exp.data_dir)
    train, test = limit(train, cfg.train_limit), limit(test, cfg.test_limit)
    if len(test) == 0 or len(train) == 0:
        raise UserError(f"the {'test' if len(train) else 'training'} set of {cfg.dataset} is empty", "point --data-dir at a dataset with images")
    train, val, split = holdout(train, cfg.val)     # every choice is made on val, never on test
    check_sizes(exp, len(train))
    previous = prepare_folder(exp)
    data = fingerprint(*(d for d in (train, val, test) if d is not None))
    if previous is not None:
        check_resumed_inputs(previous, exp, data, train, test)
    misclassified = read_misclassified(exp.out, len(test), len(test.info.classes)) if previous is not None else {}
    log(plan_line(exp, specs))                 # every check passed; the first write comes next
    open_folder(exp)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S")     # before the search: the run's times include it
    search = search_lrs(exp, log, then) if cfg.lr == AUTO else None
    specs = exp.specs()                        # with each variant's searched lr
    local = isinstance(exp.executor, LocalExecutor)
    results = {
        "normlab": __version__, "schema": SCHEMA, "dataset": cfg.dataset,
        "config": {**exp.config(), "data_source": str(train.source), "train_size": len(train),
                   "val_size": len(val) if val is not None else 0, "test_size": len(test), "validation": split,
                   "data_fingerprint": data},
        "executor": exp.executor.describe(), **environment(resolve_device(cfg.device if local else "cpu")),
        "started": (previous or {}).get("started") or started_at,
        # Kept until this run replaces them: a resume that fails loses nothing of the last one.
        **{k: previous[k] for k in ("seconds", "finished") if k in (previous or {})},
        **({"lr_search": search} if search else {}),
        **({SEARCH_ROUND: exp.search_round} if exp.search_round else {}),
        "runs": [],
    }
    before = {r["key"]: r for r in (previous or {}).get("runs", [])}
    first_seed = cfg.seed
    todo = []
    for spec in specs:
        record = before.get(spec.key) or {"key": spec.key, "variant": str(spec.variant), "seed": spec.seed,
                                          "axes": spec.axes, "lr": spec.cfg.peak_lr, "status": PENDING, "epochs": []}
        results["runs"].append(record)
        path = checkpoint_path(exp.out, spec.key)
        wants_grid = spec.seed == first_seed and misclassified_key(str(spec.variant), spec.axes) not in misclassified
        # A finished run is skipped, unless its checkpoint is gone (deleted after a refusal:
        # trained again) or its misclassified images are missing (recomputed from the checkpoint).
        if is_finished(record["status"]) and path.exists() and not (wants_grid and record["status"] == "done"):
            continue
        # Local processes share this disk and checkpoint every epoch in place; a Ray task may run
        # elsewhere: it gets the partial checkpoint, if any, and returns the final one.
        todo.append(Cell(spec.key, str(spec.variant), spec.seed, spec.cfg.to_dict(), spec.label,
                         checkpoint=str(path) if local else None,
                         resume_from=None if local or not path.exists() else path.read_bytes(),
                         keep_predictions=spec.seed == first_seed))
    if results != previous:
        save_results(exp.out, results)
    total, skipped = len(specs), len(specs) - len(todo)
    log(f"normlab: {skipped} already finished, {len(todo)} to train"
        + (f"; {results['config']['lr_rule']}" if results["config"]["lr_rule"] else ""))
    index = {r["key"]: i for i, r in enumerate(results["runs"])}
    started = time.perf_counter()
    finished = []

    events = EventLog(exp.out, {r["key"]: len(r["epochs"]) for r in results["runs"]}) if exp.tensorboard else None

    def save() -> None:
        save_results(exp.out, results)
        for run in results["runs"] if events else ():
            events.epochs(run["key"], run["epochs"])

    def on_epoch(key: str, record: dict) -> None:
        results["runs"][index[key]] = {**results["runs"][index[key]], **record}
        save()

    def on_result(result: CellResult) -> None:
        i = index[result.key]
        spec = specs[i]
        if result.checkpoint is not None:
            from .storage import write_bytes
            write_bytes(checkpoint_path(exp.out, result.key), result.checkpoint)
        results["runs"][i] = record = {**{k: results["runs"][i][k] for k in ("key", "variant", "seed", "axes", "lr")},
                                       **result.record}
        if result.predictions is not None:
            import torch
            misclassified[misclassified_key(record["variant"], spec.axes)] = most_confident_mistakes(
                torch.as_tensor(result.predictions.copy()), torch.as_tensor(result.confidences.copy()), test.labels)
            order = [misclassified_key(str(s.variant), s.axes) for s in specs if s.seed == first_seed]
            write_json(exp.out / MISCLASSIFIED, {k: misclassified[k] for k in order if k in misclassified})
        save()
        finished.append(time.perf_counter() - started)
        left = len(todo) - len(finished)
        eta = f", about {finished[-1] / len(finished) * left:.0f} s left" if left else ""
        chosen = chosen_epoch(record)
        acc = (f"test acc {chosen['test_acc']:.2f}% at epoch {chosen['epoch']}"
               + (f" (last {record['epochs'][-1]['test_acc']:.2f}%)" if chosen is not record["epochs"][-1] else "")
               if chosen else "no finished epoch")
        log(f"[{skipped + len(finished)}/{total}] {spec.label}: {acc}, {record['status']} "
            f"({record.get('seconds', 0):.1f} s){eta}")

    exp.executor.run_cells(todo, Splits(train, val, test), on_result, folder=exp.out, on_epoch=on_epoch if local else None)
    results["executor"] = exp.executor.describe()
    results["seconds"] = round(time.perf_counter() - started + (previous or {}).get("seconds", 0.0), 3)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save_results(exp.out, results)
    try:
        if events:
            # Closed before the report: with --tensorboard it rewrites every event file from
            # results.json, the figures included (these writers kept logging them a second time).
            events.close()
        if then is not None:
            then(exp.out, test)
    finally:
        unlock_folder(exp.out)
    return results


# ---- --lr auto: a search on the validation split, run as grids of their own ------------------------

LR_GRID = (1 / 8, 1 / 4, 1 / 2, 1, 2)   # x the default peak lr: 0.0125-0.2 for sgd
# Successive halving in two rounds, each a run folder, every search run trained from scratch with
# its own one-cycle schedule compressed into its epochs: (folder, share of the real epochs, lrs
# trained). Round 1 trains every lr of LR_GRID, round 2 the best 2 of round 1 again, longer; the
# choice is round 2's best. Why: round 1 alone (1 epoch per lr at 10 epochs) rewards the rate that
# learns fastest in one compressed cycle. Under He init alone it chose 0.2 for ln (10 epochs: 68.6%;
# 0.1: 75.1%); with the trust ratio it still chose 0.2, the largest rate, for ln, and put bn's best
# two 3 of 400 validation images apart (0.05 50.5%, 0.1 49.75%), an order 3 epochs reversed (0.1
# 78.5%, 0.05 76.0%; docs/recipe.md, "--lr auto, measured"). Cost per variant: 5 x 10% + 2 x 30%
# of the epochs, 1.1 real runs (0.5 for round 1 alone).
SEARCH_ROUNDS = tuple(zip(SEARCH_FOLDERS, (0.1, 0.3), (len(LR_GRID), 2)))
LR_SEARCH = SEARCH_ROUNDS[0][0]
CHOSEN_BY = ("validation accuracy at each search run's best-validation epoch in the last round (ties: lower "
             "validation loss, then the smaller lr)")


def search_epochs(epochs: int) -> list[int]:
    """Each round's epochs per search run: at least 1, and each round longer than the last (at
    most the real runs' epochs): a round that cannot be is left out (no second round at 1 epoch)."""
    out = []
    for _, share, _ in SEARCH_ROUNDS:
        n = min(epochs, max(round(epochs * share), out[-1] + 1 if out else 1))
        if out and n <= out[-1]:
            break
        out.append(n)
    return out


def search_experiment(exp: Experiment, step: int = 0, only: dict[str, list[float]] | None = None) -> Experiment:
    """Round ``step`` + 1 of the search of ``exp``: its variants x LR_GRID (round 1), or each variant's
    ``only`` lrs, one seed, a few epochs, at the base settings."""
    # In a batch-size sweep the searched lr is the rate at REFERENCE_BATCH, which the runs scale.
    cfg = replace(exp.cfg, lr=None, seeds=1, epochs=search_epochs(exp.longest_epochs())[step],
                  batch_size=REFERENCE_BATCH if exp.scaled() else exp.cfg.batch_size)
    grid = [round(cfg.peak_lr * f, 8) for f in LR_GRID]
    cells = None if only is None else {(v, lr) for v, lrs in only.items() for lr in lrs}
    out = exp.out / SEARCH_ROUNDS[step][0]
    return Experiment(exp.variants, cfg, out, {"lr": [lr for lr in grid if cells is None or lr in {c[1] for c in cells}]},
                      "none", exp.data_dir, exp.resume and out.is_dir(), exp.overwrite, exp.executor, only=cells,
                      search_round=step + 1)


def search_lrs(exp: Experiment, log=print, then=None) -> dict:
    """Run (or, on --resume, reuse) the search's rounds; set ``exp.lrs``; return what results.json records."""
    variants = list(map(str, exp.variants))
    rounds, tried, only = [], {}, None
    for k, epochs in enumerate(search_epochs(exp.longest_epochs())):
        search = search_experiment(exp, k, only)
        results = search_round(search, log, then)
        tried = {v: search_table(results, v) for v in variants}
        keep = SEARCH_ROUNDS[k + 1][2] if k + 1 < len(SEARCH_ROUNDS) else 1      # what the next round trains
        only = {v: [t["lr"] for t in ranked(tried[v])[:keep]] for v in variants}
        rounds.append({"folder": search.out.name, "epochs": epochs, "lrs": search.axes["lr"],
                       "per_variant": SEARCH_ROUNDS[k][2], "tried": tried, "seconds": results.get("seconds", 0.0)})
        if not any(only.values()):
            break                              # every lr diverged: nothing to train longer
    first = rounds[0]
    cost = sum(r["epochs"] * sum(len(t) for t in r["tried"].values()) for r in rounds) / len(variants) / exp.longest_epochs()
    record = {"folder": LR_SEARCH, "epochs": first["epochs"], "grid": first["lrs"], "chosen_by": CHOSEN_BY,
              "rounds": [{k: r[k] for k in ("folder", "epochs", "lrs", "per_variant")} for r in rounds],
              "cost_runs": round(cost, 3), "cost_run_epochs": exp.longest_epochs(),
              "seconds": round(sum(r["seconds"] for r in rounds), 3), "variants": {}}
    for v in variants:
        best = ranked(rounds[-1]["tried"][v])
        chosen = best[0]["lr"] if best else search_experiment(exp).cfg.peak_lr
        record["variants"][v] = {"lr": chosen, "tried": first["tried"][v],
                                 **({"round2": rounds[1]["tried"][v]} if len(rounds) > 1 else {}),
                                 **({} if best else {"note": "every lr diverged: the default"})}
        exp.lrs[v] = chosen
    log("normlab: chosen lr " + ", ".join(f"{v} {r['lr']:g}" for v, r in record["variants"].items()))
    return record


def search_round(search: Experiment, log, then) -> dict:
    """One round's results: trained, or on --resume, reused when every run of it is finished."""
    previous = read_results(search.out) if search.resume and (search.out / RESULTS).is_file() else None
    if previous is not None:
        check_resumable(previous, search)
        if {r["key"] for r in previous["runs"] if is_finished(r["status"])} >= {s.key for s in search.specs()}:
            log(f"normlab: the lr search in {search.out} is finished; not rerun")
            return previous
    log(f"normlab: --lr auto: searching {', '.join(f'{x:g}' for x in search.axes['lr'])}"
        f"{' per variant' if search.only is None else ' (each variant the best of the round before)'}, "
        f"{plural(search.cfg.epochs, 'epoch')} each, on the validation split")
    return run_experiment(search, log, then)


def search_table(results: dict, variant: str) -> list[dict]:
    """What each lr of ``variant`` reached in a search round, at its best-validation epoch."""
    tried = []
    for run in (r for r in results["runs"] if r["variant"] == variant):
        best = run.get("final", {}).get("best_val_epoch")
        epoch = next((e for e in run["epochs"] if e["epoch"] == best and "val_acc" in e), {})
        tried.append({"lr": run["axes"]["lr"], "status": run["status"], "best_val_epoch": best,
                      "val_acc": epoch.get("val_acc"), "val_loss": epoch.get("val_loss")})
    return tried


def ranked(tried: list[dict]) -> list[dict]:
    """The finished search runs, best first; a diverging lr is never chosen."""
    done = [t for t in tried if t["status"] == "done" and t["val_acc"] is not None]
    return sorted(done, key=lambda t: (-t["val_acc"], t["val_loss"], t["lr"]))
