"""Command line: parse arguments, call the library, turn bad input into one line and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from . import __version__
from .errors import UserError, WriteError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what and how to fix), not usage text + error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def add_training_options(p: argparse.ArgumentParser) -> None:
    from .data.catalog import DATASETS
    g = p.add_argument_group("data and training")
    g.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)} (default fashion-mnist)")
    g.add_argument("--epochs", type=whole_number, default=None, help="epochs per run (default 20; 2 with --quick)")
    g.add_argument("--batch-size", type=whole_number, default=128, help="training batch size (default 128)")
    g.add_argument("--seeds", type=whole_number, default=1, help="train each variant this many times, seeds --seed, --seed+1, ... (default 1)")
    g.add_argument("--seed", type=whole_number, default=1, help="first seed (default 1)")
    g.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda")
    g.add_argument("--data-dir", default=None, help="folder with the dataset files (searched first)")
    g.add_argument("--optimizer", default="sgd", help="sgd (Nesterov momentum) or adamw (default sgd)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1 for sgd, 0.004 for adamw)")
    g.add_argument("--schedule", default="onecycle", help="onecycle, cosine or constant (default onecycle)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="on conv kernels only (default 5e-4)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--dropout", type=float, default=0.0, help="channel dropout after each conv block (default 0)")
    g.add_argument("--quick", action="store_true", help="a first look: 2 epochs on 10,000 training and 2,000 test images")
    g.add_argument("--workers", type=whole_number, default=1,
                   help="train this many (variant, seed) runs at once in local processes, each with cores/N threads; "
                        "with several GPUs, worker i uses GPU i mod count (default 1: one after another)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<time>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    o.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def config_from(args, batch_size: int | None = None):
    """The TrainConfig of compare, train and sweep (whose cells override the batch size)."""
    from .train import TrainConfig
    cfg = TrainConfig(dataset=args.dataset, epochs=args.epochs if args.epochs is not None else (2 if args.quick else 20),
                      batch_size=batch_size or args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                      dropout=args.dropout, seed=args.seed, seeds=args.seeds, device=args.device,
                      train_limit=getattr(args, "train_limit", None), test_limit=getattr(args, "test_limit", None))
    if args.quick:
        cfg.train_limit, cfg.test_limit = cfg.train_limit or 10_000, cfg.test_limit or 2_000
    return cfg


def run_saving_as_it_goes(args, out: Path, job, saved: str) -> int:
    """Run ``job()``, which writes ``out`` as it goes; on Ctrl-C or a failed write, print the
    command that continues from what is saved (``saved`` says what that is)."""
    try:
        job()
    except KeyboardInterrupt:
        again, anything = continue_command(args, out)
        print(f"\ninterrupted; {saved} is saved in {out}. Continue with:\n  {again}" if anything else
              f"\ninterrupted before anything was saved. Start again with:\n  {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except WriteError as exc:
        # Disk full or folder gone read-only mid-run: what is on disk is whole; say how to go on.
        again, anything = continue_command(args, out)
        raise UserError(exc.what, f"free some disk space or make the folder writable, then "
                                  f"{'continue' if anything else 'start again'} with: {again}") from None
    return 0


def run_training(args, variants) -> int:
    from .experiment import Plan, default_out, run_plan
    cfg = config_from(args)
    out = Path(args.out) if args.out else default_out(cfg.dataset)
    plan = Plan(variants, cfg, out, args.data_dir, args.resume, args.overwrite, workers=args.workers)
    return run_saving_as_it_goes(args, out, lambda: print_outcome(run_plan(plan), out), "every finished epoch")


def continue_command(args, out: Path) -> tuple[str, bool]:
    """The command that carries on from what is saved in ``out``, and whether anything is."""
    from .runs import RESULTS
    saved = (out / RESULTS).is_file()
    # With something saved, --resume continues it (and --overwrite would throw it away).
    words = [a for a in args.argv if a not in (("--resume", "--overwrite") if saved else ("--resume",))]
    if not args.out:
        words += ["--out", str(out)]
    return "normlab " + shlex.join(words + (["--resume"] if saved else [])), saved


def print_outcome(results: dict, out: Path) -> None:
    print(f"\n{'variant':<14} {'seed':>4} {'params':>7} {'test acc':>9} {'best':>7} {'test loss':>9} {'seconds':>8}  status")
    for run in results["runs"]:
        final = run.get("final", {})
        acc = f"{final['test_acc']:8.2f}%" if final else f"{'-':>9}"
        best = f"{final['best_test_acc']:6.2f}%" if final else f"{'-':>7}"
        loss = f"{final['test_loss']:9.4f}" if final else f"{'-':>9}"
        print(f"{run['variant']:<14} {run['seed']:>4} {run.get('params', 0):>7,} {acc} {best} {loss} {run.get('seconds', 0):8.1f}  {run['status']}")
    print(f"\nrun folder: {out}")
    if (out / "report.html").exists():
        print(f"report:     {out / 'report.html'}")


def cmd_compare(args) -> int:
    from .variants import parse_variants
    return run_training(args, parse_variants(args.norms))


def cmd_train(args) -> int:
    from .variants import Variant
    return run_training(args, [Variant.parse(args.norm)])


def cmd_summary(args) -> int:
    from .report.summary import summary_text
    from .variants import parse_variants
    print(summary_text(parse_variants(args.norms), args.dataset), end="")
    return 0


def cmd_report(args) -> int:
    from .report.build import write_report
    from .report.sweep import is_sweep, write_sweep_report
    if is_sweep(args.run_dir):
        for path in write_sweep_report(args.run_dir):
            print(path)
        return 0
    for path in write_report(Path(args.run_dir), args.data_dir):
        print(path)
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS, describe
    entries = [describe(name, args.data_dir) for name in DATASETS]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        if e["found"]:
            print(f"{e['dataset']:<14} found in {e['root']}")
        else:
            print(f"{e['dataset']:<14} missing (looked in {'; '.join(e['looked'])})\n{'':<14} {e['how_to_get']}; "
                  f"or let normlab download it from {e['download_from'][0]}")
    return 0


def cmd_explain(args) -> int:
    from .explain import Shape, draw_figure, explain
    from .explain.figure import check_path
    from .explain.stats import check_seed
    from .explain.render import to_markdown, to_text
    shape = Shape(args.batch, args.channels, args.height, args.width, args.groups).check()
    check_seed(args.seed)
    if args.figure:
        check_path(args.figure)
    explanation = explain(shape, args.seed)
    if args.figure:
        draw_figure(args.figure, shape)
    if args.json:
        print(json.dumps(explanation.to_json()))
    elif args.markdown:
        print(to_markdown(explanation, figure=args.figure), end="")
    else:
        print(to_text(explanation), end="")
        if args.figure:
            print(f"figure: {args.figure}")
    return 0


def number_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} names no number")
    return values


def cmd_bench(args) -> int:
    from .bench import BenchConfig, format_table, run_bench
    from .variants import parse_variants
    cfg = BenchConfig(dataset=args.dataset, variants=tuple(str(v) for v in parse_variants(args.variants)),
                      device=args.device, batch_size=args.batch_size, steps=args.steps, windows=args.windows,
                      reference_workers=args.reference_workers, full=args.full, epochs=args.epochs, compile=args.compile, nchw=args.nchw,
                      data_dir=args.data_dir)
    result = run_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=1) if args.json else format_table(result), end="\n" if args.json else "")
    return 0


def cmd_sweep(args) -> int:
    import time
    from .data import dataset_info
    from .executors import make_executor
    from .sweep import REFERENCE_BATCH, SweepPlan, parse_batch_sizes, run_sweep
    from .variants import parse_variants
    sizes = parse_batch_sizes(args.batch_sizes)
    variants = parse_variants(args.norms)
    cfg = config_from(args, batch_size=REFERENCE_BATCH)
    for name in ("train_limit", "test_limit"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)} must be at least 1", f"pass e.g. --{name.replace('_', '-')} 10000")
    executor = make_executor(args.executor, args.workers, args.device, args.ray_address, args.cpus_per_cell,
                             args.gpus_per_cell, args.max_retries, args.threads)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{dataset_info(cfg.dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    plan = SweepPlan(sizes, variants, cfg, out, args.data_dir, args.resume, args.overwrite, args.lr_scaling, executor)
    def job():
        run_sweep(plan)
        print(f"\nsweep folder: {out}\nfigure:       {out / 'sweep.png'}\ntable:        {out / 'sweep.md'}, {out / 'sweep.csv'}")
    return run_saving_as_it_goes(args, out, job, "every finished cell (and epoch)")


def add_sweep_parser(sub) -> None:
    from .data.catalog import DATASETS
    p = sub.add_parser("sweep", help="every batch size x variant x seed: test error against batch size, with error bars",
                       description="Train every (batch size, variant, seed) cell and draw test error against batch "
                                   "size per variant with error bars (the Group Normalization paper's figure 1 on "
                                   "your data), with the table behind it and significance tests. The peak learning "
                                   "rate is scaled linearly with the batch size: lr = LR x B / 128, LR being --lr "
                                   "(default 0.1 for sgd). Cells run one after another, in --workers local "
                                   "processes, or as Ray tasks on a cluster (--executor ray).")
    p.add_argument("--batch-sizes", default="2,8,32,128", help="comma-separated batch sizes (default 2,8,32,128)")
    p.add_argument("--norms", default="bn,gn,ln", help="comma-separated variants (default bn,gn,ln)")
    g = p.add_argument_group("data and training (per cell)")
    g.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)} (default fashion-mnist)")
    g.add_argument("--epochs", type=whole_number, default=None, help="epochs per cell (default 20; 2 with --quick)")
    g.add_argument("--seeds", type=whole_number, default=3, help="cells per (batch size, variant), seeds --seed, --seed+1, ... (default 3)")
    g.add_argument("--seed", type=whole_number, default=1, help="first seed (default 1)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate at batch 128, scaled for the others (default 0.1 for sgd, 0.004 for adamw)")
    g.add_argument("--lr-scaling", default="linear", help="linear (lr x B / 128; default) or none (--lr at every batch size)")
    g.add_argument("--train-limit", type=whole_number, default=None, help="use only the first N training images")
    g.add_argument("--test-limit", type=whole_number, default=None, help="use only the first N test images")
    g.add_argument("--quick", action="store_true", help="2 epochs on 10,000 training and 2,000 test images")
    g.add_argument("--device", default="auto", help="auto (CUDA when there is one; several GPUs are shared out to the workers), cpu or cuda")
    g.add_argument("--data-dir", default=None, help="folder with the dataset files (searched first)")
    g.add_argument("--optimizer", default="sgd", help="sgd (Nesterov momentum) or adamw (default sgd)")
    g.add_argument("--schedule", default="onecycle", help="onecycle, cosine or constant (default onecycle)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="on conv kernels only (default 5e-4)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--dropout", type=float, default=0.0, help="channel dropout after each conv block (default 0)")
    e = p.add_argument_group("where cells run")
    e.add_argument("--executor", default="local", help="local (default) or ray (needs pip install 'normlab[ray]')")
    e.add_argument("--workers", type=whole_number, default=1, help="local: cells trained at once in worker processes, each with cores/N threads (default 1: one after another here)")
    e.add_argument("--threads", type=whole_number, default=None, help="local: torch threads per cell (default: every core with 1 worker, cores/N with N)")
    e.add_argument("--ray-address", default=None, help="ray: join this cluster (e.g. auto, or HOST:6379); default: start a local one")
    e.add_argument("--cpus-per-cell", type=float, default=1, help="ray: CPUs each cell asks for (default 1)")
    e.add_argument("--gpus-per-cell", type=float, default=None, help="ray: GPUs each cell asks for (default 1 when the cluster has GPUs, else 0; 0.5 puts two cells on a GPU)")
    e.add_argument("--max-retries", type=whole_number, default=2, help="ray: times a cell whose worker died is started again (default 2)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="sweep folder (default runs/sweep-<dataset>-<time>)")
    o.add_argument("--resume", action="store_true", help="continue the sweep in --out: finished cells are skipped")
    o.add_argument("--overwrite", action="store_true", help="replace a sweep already in --out")
    p.set_defaults(func=cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    from .variants import DEFAULT_VARIANTS
    parser = Parser(prog="normlab", description="How do normalization layers change how a small CNN trains?")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("compare", help="train several variants on one dataset and compare them",
                       description="Train every variant (and seed) and write a run folder with results, curves and report.")
    p.add_argument("--norms", default=DEFAULT_VARIANTS,
                   help=f"comma-separated variants NORM[:GROUPS][+l1[=LAMBDA]] (default {DEFAULT_VARIANTS})")
    add_training_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train", help="train one variant", description="Train one variant and write a run folder.")
    p.add_argument("--norm", required=True, help="the variant, e.g. bn, gn:8, ln, in, none, bn+l1, gn:4+l1=5e-5")
    add_training_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("summary", help="layer table and parameter count of each variant")
    p.add_argument("--dataset", default="fashion-mnist", help="picks the net (cifar10: 3x32x32; mnist, fashion-mnist: 1x28x28)")
    p.add_argument("--norms", default="bn,ln,gn,in,ln-elem,none", help="comma-separated variants")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("explain", help="how BN, LN, GN and IN compute their statistics, worked and checked",
                       description="Work BatchNorm, LayerNorm, GroupNorm and InstanceNorm by hand on a small integer "
                                   "input and check every number against the PyTorch layers normlab's models use.")
    p.add_argument("--batch", type=whole_number, default=3, help="N, samples in the batch (default 3)")
    p.add_argument("--channels", type=whole_number, default=4, help="C (default 4)")
    p.add_argument("--height", type=whole_number, default=2, help="H (default 2)")
    p.add_argument("--width", type=whole_number, default=2, help="W (default 2)")
    p.add_argument("--groups", type=whole_number, default=2, help="G, GroupNorm's groups; must divide C (default 2)")
    p.add_argument("--seed", type=whole_number, default=1, help="draws the input (default 1)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="every number, machine-readable")
    form.add_argument("--markdown", action="store_true", help="the section a report embeds")
    p.add_argument("--figure", metavar="PNG", default=None, help="also draw the four norms over the (N, C, H*W) cube to PNG")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="rebuild every figure, summary.txt and the report of a run folder",
                       description="Rebuild curves.png, the misclassified grids, summary.txt, report.md and the "
                                   "self-contained report.html from RUN_DIR's results.json, checkpoints and the "
                                   "test set. Trains nothing.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a normlab compare or train")
    p.add_argument("--data-dir", default=None, help="folder with the test set (default: where the run found it)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="training speed: normlab's path vs a seed-style reference",
                       description="Time training steps of normlab's path (data on the device, whole-batch "
                                   "augmentation, Training.step) against a seed-style reference (per-image "
                                   "transforms in a DataLoader, eager NCHW, .item() every step) on the same model, "
                                   "in alternating windows; report images/s, epoch time and the ratio. Uses the "
                                   "real dataset when it is here, else random images of its shape.")
    p.add_argument("--dataset", default="cifar10", help="picks the net and the data (default cifar10)")
    p.add_argument("--variants", default="bn,ln,gn", help="comma-separated variants (default bn,ln,gn)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=whole_number, default=128, help="default 128")
    p.add_argument("--steps", type=whole_number, default=40, help="training steps per timed window (default 40)")
    p.add_argument("--windows", type=whole_number, default=5, help="timed windows per pipeline; the median counts (default 5)")
    p.add_argument("--reference-workers", type=number_list, default=(0, 2),
                   help="DataLoader worker counts of the reference to time (default 0,2)")
    p.add_argument("--full", action="store_true", help="also time the whole job (every variant, --epochs, with evaluation) through train_run; needs the real data")
    p.add_argument("--epochs", type=whole_number, default=20, help="epochs of the --full job (default 20)")
    p.add_argument("--compile", action="store_true", help="also time normlab's path under torch.compile, with its compile time")
    p.add_argument("--nchw", action="store_true", help="also time normlab's path with NCHW instead of channels_last tensors")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (searched first)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)

    add_sweep_parser(sub)

    p = sub.add_parser("datasets", help="which datasets are found where, which are missing")
    p.add_argument("--data-dir", default=None, help="folder to search first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv                  # to print the command that continues an interrupted run
    try:
        return args.func(args)
    except UserError as exc:
        print(f"normlab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `normlab explain | head`: the reader left; say nothing more (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
