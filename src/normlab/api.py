"""The library's front door: train a grid, write its report, get the Run back.

    run = normlab.compare(dataset="fashion-mnist", norms="bn,gn:4", epochs=3, out="runs/x")
    run = normlab.train(norm="gn:4", epochs=3, out="runs/y")
    run = normlab.sweep(over={"batch_size": [8, 32], "lr": [0.03, 0.1]}, norms="bn,gn", seeds=3, out="runs/z")

Any TrainConfig field is a keyword (``batch_size=64``, ``lr=0.05``, ``seeds=3``); the command
line calls the same functions.
"""

from __future__ import annotations

from pathlib import Path

from .config import DEFAULT_LR_SCALING, TrainConfig
from .errors import UserError


def experiment(norms, out=None, over: dict | None = None, lr_scaling: str = "none", data_dir=None,
               resume: bool = False, overwrite: bool = False, executor=None, workers: int = 1,
               tensorboard: bool = False, **options):
    """The Experiment these arguments describe (nothing is read or written)."""
    from .engine import Experiment, default_out
    from .executors import make_executor
    from .variants import Variant, parse_variants
    unknown = sorted(set(options) - set(TrainConfig().to_dict()))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}", f"use TrainConfig's fields: {', '.join(TrainConfig().to_dict())}")
    cfg = TrainConfig(**options)
    cfg.validate()                                 # before default_out reads the dataset's name
    if not (isinstance(norms, str) or (isinstance(norms, (list, tuple)) and all(isinstance(v, (str, Variant)) for v in norms))):
        raise UserError(f"norms={norms!r} is not a list of variant names", 'pass e.g. norms="bn,gn:4" or norms=["bn", "gn:4"]')
    # One grammar and one duplicate check for "bn,gn:4" and ["bn", "gn:4"] alike.
    variants = parse_variants(norms if isinstance(norms, str) else ",".join(map(str, norms)))
    if over is not None and not (isinstance(over, dict) and all(
            isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in v) for v in over.values())):
        raise UserError(f"over={over!r} is not a dict of option names to lists of values", 'pass e.g. over={"batch_size": [8, 32]}')
    if out is not None and not (isinstance(out, (str, Path)) and str(out).strip()):
        raise UserError(f"--out {out!r} is not a folder path", 'pass e.g. --out runs/x, or leave --out out for runs/<dataset>-<time>')
    axes = {name: list(values) for name, values in (over or {}).items()}
    executor = executor or make_executor("local", workers, cfg.device)
    out = Path(out) if out else default_out(cfg.dataset, sweep=bool(axes))
    return Experiment(variants, cfg, out, axes, lr_scaling, None if data_dir is None else str(data_dir),
                      resume, overwrite, executor, tensorboard)


def write_any_report(out: Path, test=None, data_dir=None, log=print) -> list[Path]:
    """The report of any run folder (a comparison's or a sweep's), saying what it draws."""
    from .report.build import write_report
    written = write_report(out, data_dir, test, log=log)
    from .tensorboard import write_events, written_events
    if written_events(out):                        # a run trained with --tensorboard: its events follow
        from .runs import read_results
        written.append(write_events(out, read_results(out)))
    return written


def run(exp, log=print):
    """Train ``exp``, write its report; the Run of its folder."""
    from .engine import run_experiment
    from .runs import load_run
    run_experiment(exp, log=log, then=write_any_report)
    return load_run(exp.out)


def compare(dataset: str = "fashion-mnist", norms="bn,ln,gn,bn+l1", **options):
    """Every variant x seed on one dataset, into one run folder; returns its Run."""
    return run(experiment(norms, dataset=dataset, **options))


def train(norm: str = "bn", **options):
    """One variant; returns the Run."""
    return run(experiment([norm], **options))


def sweep(over: dict, norms="bn,gn,ln", lr_scaling: str = DEFAULT_LR_SCALING, seeds: int = 3, **options):
    """Every point of the grid ``over`` ({"batch_size": [2, 8, 32]}) x variant x seed; returns the Run."""
    return run(experiment(norms, over=over, lr_scaling=lr_scaling, seeds=seeds, **options))
