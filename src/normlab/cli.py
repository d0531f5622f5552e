"""Command line: parse arguments, call the library, turn bad input into one line and exit 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import UserError, WriteError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143                 # 128 + SIGTERM, as a shell reports a process it ended
EXIT_BROKEN_PIPE = 141                # 128 + SIGPIPE: what `normlab compare | head -1` ends with


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), handled like Ctrl-C: save, say how to continue."""


def on_sigterm(signum, frame):
    raise Terminated()


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what and how to fix), not usage text + error, and
    an option must be spelled out: with argparse's prefix matching, `compare --over` (a sweep's
    option typed into compare) meant --overwrite and replaced the finished run in --out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def add_training_options(p: argparse.ArgumentParser, sweep: bool = False, **defaults) -> None:
    """Every TrainConfig field as --its-name, then the options of every command that trains."""
    from .config import config_fields
    g = p.add_argument_group("data and training" + (" (per run)" if sweep else ""))
    for name, kind, default, text in config_fields():
        default = defaults.get(name, default)
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            g.add_argument(flag, action="store_true", default=None, help=text)
        else:
            shown = "" if default is None or "default" in text else f" (default {default})"
            g.add_argument(flag, type=whole_number if kind is int else kind, default=None, help=(text + shown).replace("%", "%%"))
    p.set_defaults(config_defaults=defaults)
    g.add_argument("--data-dir", default=None, help="folder with the dataset files (searched first)")
    g.add_argument("--quick", action="store_true", help="a first look: 2 epochs on 10,000 training and 2,000 test images")
    e = p.add_argument_group("where runs train")
    e.add_argument("--workers", type=whole_number, default=1,
                   help="train this many runs at once in local processes, each with cores/N threads; "
                        "with several GPUs, worker i uses GPU i mod count (default 1: one after another)")
    e.add_argument("--executor", default="local", help="local (default) or ray (needs pip install 'normlab[ray]')")
    e.add_argument("--threads", type=whole_number, default=None, help="local: torch threads per run (default: every core with 1 worker, cores/N with N)")
    e.add_argument("--stack", default="auto", help="local: auto trains the seeds of one configuration as one "
                                                   "stacked network where that is faster (small batches on a CPU, normlab's "
                                                   "nets; a --model of yours trains one at a time); off: one at a time "
                                                   "(default auto)")
    e.add_argument("--ray-address", default=None, help="ray: join this cluster (e.g. auto, or HOST:6379); default: start a local one")
    e.add_argument("--cpus-per-cell", type=float, default=None, help="ray: CPUs each run asks for (default 1)")
    e.add_argument("--gpus-per-cell", type=float, default=None, help="ray: GPUs each run asks for (default 1 when the cluster has GPUs, else 0; 0.5 puts two runs on a GPU)")
    e.add_argument("--max-retries", type=whole_number, default=None, help="ray: times a run whose worker died is started again (default 2)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<time>; a sweep's runs/sweep-<dataset>-<time>)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out: finished runs are skipped, unfinished ones go on from their last epoch")
    o.add_argument("--overwrite", action="store_true", help="replace a run already in --out (removes only files normlab wrote there)")
    o.add_argument("--tensorboard", action="store_true", help="also write every epoch (and the figures) as TensorBoard "
                                                              "events in OUT/tensorboard (pip install tensorboard)")


def config_options(args) -> dict:
    """The TrainConfig fields given on the command line, the command's defaults, and --quick."""
    from .config import config_fields
    options = {**args.config_defaults, **{name: getattr(args, name) for name, *_ in config_fields() if getattr(args, name) is not None}}
    if args.quick:
        options.setdefault("epochs", 2)
        options.setdefault("train_limit", 10_000)
        options.setdefault("test_limit", 2_000)
    return options


def parse_over(texts: list[str], batch_sizes: str | None) -> dict[str, list]:
    """--over lr=0.01,0.1 (any number of them) and --batch-sizes 2,8 -> {"lr": [...], "batch_size": [...]}."""
    from .config import parse_value
    axes = {}
    for text in texts + ([f"batch_size={batch_sizes}"] if batch_sizes is not None else []):
        name, _, values = text.partition("=")
        name = name.strip().replace("-", "_")
        words = [w.strip() for w in values.split(",")]
        if not _ or not any(words) or not all(words):
            raise UserError(f"--over {text!r} " + ("has an empty entry" if any(words) else "is not NAME=V1,V2,..."),
                            "pass e.g. --over batch_size=2,8,32,128")
        if name in axes:
            raise UserError(f"{name} is swept twice", "give each option one --over (or --batch-sizes)")
        axes[name] = [parse_value(name, w) for w in words]
        if len(set(axes[name])) != len(words):
            raise UserError(f"--over {name} lists a value twice", "list each value once")
    return {k: sorted(v) if k == "batch_size" else v for k, v in axes.items()}


def run_saving_as_it_goes(args, out: Path, job, saved: str) -> int:
    """Run ``job()``, which writes ``out`` as it goes; on Ctrl-C or a failed write, print the
    command that continues from what is saved (``saved`` says what that is)."""
    try:
        job()
    except KeyboardInterrupt as exc:
        again, anything = continue_command(args, out)
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{what}; {saved} is saved in {out}. Continue with:\n  {again}" if anything else
              f"\n{what} before anything was saved. Start again with:\n  {again}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout left (`| head -1`): stop as the pipe says, but not silently with
        # exit 0 and the run half done; stderr may still reach the user.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        again, anything = continue_command(args, out)
        print(f"normlab {args.command}: stopped: its output was closed (broken pipe); "
              + (f"{saved} is saved in {out}; continue with: {again}" if anything else f"start again with: {again}"),
              file=sys.stderr)
        return EXIT_BROKEN_PIPE
    except WriteError as exc:
        # Disk full or folder gone read-only mid-run: what is on disk is whole; say how to go on.
        again, anything = continue_command(args, out)
        raise UserError(exc.what, f"{exc.remedy}, then {'continue' if anything else 'start again'} with: {again}") from None
    return 0


def run_training(args, norms, over: dict | None = None, lr_scaling: str = "none") -> int:
    from .api import experiment
    from .config import TrainConfig
    options = config_options(args)
    cfg = TrainConfig(**options)
    cfg.validate()                             # before PyTorch is imported: input errors answer at once
    if sys.stdout.isatty():
        # On a terminal, say at once what will happen: importing PyTorch alone takes seconds. (In
        # logs the engine's line, after every check, comes first: an error there is one line.)
        from .variants import parse_variants
        runs = len(parse_variants(norms) if isinstance(norms, str) else norms) * cfg.seeds * math.prod(map(len, (over or {}).values()))
        print(f"normlab {args.command}: {runs} run{'s' * (runs != 1)} into {args.out or 'runs/'}; loading PyTorch and the data ...", flush=True)
    from .executors import make_executor
    executor = make_executor(args.executor, args.workers, options.get("device", "auto"), args.ray_address,
                             args.cpus_per_cell, args.gpus_per_cell, args.max_retries, args.threads, args.stack)
    exp = experiment(norms, args.out, over, lr_scaling, args.data_dir, args.resume, args.overwrite, executor,
                     tensorboard=args.tensorboard, **options)

    def job():
        from .api import run
        print_outcome(run(exp).results, exp.out)
    return run_saving_as_it_goes(args, exp.out, job, "every finished epoch")


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
    from .runs import chosen_epoch
    axes = list(results["config"]["axes"])
    print(f"\n{'variant':<14} {'seed':>4} " + "".join(f"{a:>12} " for a in axes)
          + f"{'params':>7} {'epoch':>5} {'test acc':>9} {'test loss':>9} {'seconds':>8}  status")
    for run in results["runs"]:
        chosen = chosen_epoch(run)
        shown = (f"{chosen['epoch']:>5} {chosen['test_acc']:8.2f}% {chosen['test_loss']:9.4f}" if chosen
                 else f"{'-':>5} {'-':>9} {'-':>9}")
        print(f"{run['variant']:<14} {run['seed']:>4} " + "".join(f"{run['axes'][a]!s:>12} " for a in axes)
              + f"{run.get('params', 0):>7,} {shown} {run.get('seconds', 0):8.1f}  {run['status']}")
    held = results["config"].get("val_size")
    print(f"\nepoch: chosen by validation accuracy on {held:,} held-out training images" if held
          else "\nepoch: the last (no validation split)", end="; test acc and loss are that epoch's\n")
    print(f"\nrun folder: {out}")
    if (out / "report.html").exists():
        print(f"report:     {out / 'report.html'}")


def cmd_compare(args) -> int:
    return run_training(args, args.norms)


def cmd_train(args) -> int:
    return run_training(args, [args.norm])


def cmd_summary(args) -> int:
    from .report.summary import summary_text
    from .variants import parse_variants
    print(summary_text(parse_variants(args.norms), args.dataset, model=args.model), end="")
    return 0


def cmd_report(args) -> int:
    from .api import write_any_report
    from .runs import load_run
    from .storage import lock_folder, own_folder, unlock_folder
    folder = load_run(args.run_dir).folder        # refuses a folder that is not a run before taking it
    lock_folder(folder)                           # not while a run writes there; what it writes goes in the manifest
    try:
        own_folder(folder)
        paths = write_any_report(folder, data_dir=args.data_dir)
    finally:
        unlock_folder(folder)
    print("\n".join(map(str, paths)))
    return 0


def cmd_datasets(args) -> int:
    from .data import DATASETS, describe
    entries = [describe(name, args.data_dir) for name in DATASETS]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        if "error" in e:
            print(f"{e['dataset']:<14} error: {e['error']}")
        elif e["found"]:
            print(f"{e['dataset']:<14} found in {e['root']}")
        else:
            print(f"{e['dataset']:<14} missing (looked in {'; '.join(e['looked'])})\n{'':<14} {e['how_to_get']}; "
                  f"or let normlab download it from {e['download_from'][0]}")
    return 0


def cmd_explain(args) -> int:
    from .explain import Shape, draw_figure, explain
    from .explain.figure import check_new_figure
    from .explain.stats import check_seed
    from .explain.render import to_markdown, to_text
    shape = Shape(args.batch, args.channels, args.height, args.width, args.groups).check()
    check_seed(args.seed)
    if args.figure:
        check_new_figure(args.figure)
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
    from .bench import bench_config, format_table, run_bench
    from .variants import parse_variants
    variants = tuple(str(v) for v in parse_variants(args.variants)) if args.variants else None
    cfg = bench_config(args.full, dataset=args.dataset, variants=variants, device=args.device, batch_size=args.batch_size,
                       steps=args.steps, windows=args.windows, reference_workers=args.reference_workers,
                       epochs=args.epochs, compile=args.compile, nchw=args.nchw, data_dir=args.data_dir)
    result = run_bench(cfg, log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=1) if args.json else format_table(result), end="\n" if args.json else "")
    return 0


def cmd_sweep(args) -> int:
    batch_sizes = "2,8,32,128" if args.batch_sizes is None and not args.over else args.batch_sizes
    return run_training(args, args.norms, parse_over(args.over, batch_sizes), args.lr_scaling)


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid: every value of the swept options x variant x seed, with error bars",
                       description="Train every point of a grid (--over NAME=V1,V2,... for any training option; "
                                   "several --over sweep them together) x variant x seed, and draw test error against "
                                   "the swept option per variant with error bars, with the table behind it and "
                                   "significance tests. When batch_size is swept and lr is not, the peak learning "
                                   "rate is scaled with it (--lr-scaling). "
                                   "Runs train one after another, in --workers local processes, or as Ray tasks.")
    p.add_argument("--over", action="append", default=[], metavar="NAME=V1,V2",
                   help="sweep this training option over these values, e.g. batch_size=2,8,32,128 or lr=0.01,0.1")
    p.add_argument("--batch-sizes", default=None, help="shorthand for --over batch_size=... (default 2,8,32,128 when nothing is swept)")
    p.add_argument("--norms", default="bn,gn,ln", help="comma-separated variants (default bn,gn,ln)")
    from .config import DEFAULT_LR_SCALING
    p.add_argument("--lr-scaling", default=DEFAULT_LR_SCALING, help="how the peak lr follows the batch size when batch_size is "
                   "swept: linear (LR x B / 128), sqrt (LR x sqrt(B / 128)) or none (LR everywhere) (default %(default)s)")
    add_training_options(p, sweep=True, seeds=3)
    p.set_defaults(func=cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    from .variants import DEFAULT_VARIANTS
    parser = Parser(prog="normlab", description="How do normalization layers change how a small CNN trains?")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("compare", help="train several variants on one dataset and compare them",
                       description="Train every variant (and seed) and write a run folder with results, curves and report.")
    p.add_argument("--norms", default=DEFAULT_VARIANTS,
                   help=f"comma-separated variants NORM[:GROUPS][+ws][+l1[=LAMBDA]] (default {DEFAULT_VARIANTS})")
    add_training_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("train", help="train one variant", description="Train one variant and write a run folder.")
    p.add_argument("--norm", required=True, help="the variant, e.g. bn, gn:8, ln, in, none, bn+l1, gn:4+l1=5e-5")
    add_training_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("summary", help="layer table and parameter count of each variant")
    p.add_argument("--dataset", default="fashion-mnist", help="picks the net (cifar10: 3x32x32; mnist, fashion-mnist: 1x28x28)")
    p.add_argument("--norms", default="bn,ln,gn,in,ln-elem,none", help="comma-separated variants")
    p.add_argument("--model", default=None, help="your own net, pkg.module:function taking (norm_layer, in_channels, num_classes)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("explain", help="how each norm (bn, ln, gn, in, brn, frn, +ws) computes its statistics, worked and checked",
                       description="Work each norm normlab ships (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, BatchRenorm, "
                                   "FilterResponseNorm, and Weight Standardization) by hand on a small integer input and "
                                   "check every number against the PyTorch layers normlab's models use.")
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
    p.add_argument("--variants", default=None, help="comma-separated variants (default bn,gn; bn,ln,gn with --full)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=whole_number, default=128, help="default 128")
    p.add_argument("--steps", type=whole_number, default=None, help="training steps per timed window (default 15; 40 with --full)")
    p.add_argument("--windows", type=whole_number, default=None, help="timed windows per pipeline; the median counts (default 3; 5 with --full)")
    p.add_argument("--reference-workers", type=number_list, default=None,
                   help="DataLoader worker counts of the reference to time (default 0; 0,2 with --full)")
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
    for command in sub.choices.values():
        command.set_defaults(parser=command)
    parser.commands = sub.choices
    return parser


def unknown_options(args, extras: list[str], parser: argparse.ArgumentParser) -> str:
    """What the command's own parser says of options it lacks: argparse would name the top-level
    parser ("normlab: error"); and where another command has the option, which one."""
    text = f"unrecognized arguments: {' '.join(extras)}"
    flag = next((e.split("=")[0] for e in extras if e.startswith("--")), None)
    commands = [p for p in parser.commands.values() if flag and p is not args.parser and flag in p._option_string_actions]
    return text + (f" ({flag} is an option of {', '.join(p.prog for p in commands)})" if commands else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        args.parser.error(unknown_options(args, extras, parser))
    args.argv = argv                  # to print the command that continues an interrupted run
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return args.func(args)
    except (UserError, PermissionError) as exc:
        if isinstance(exc, PermissionError):
            # A dataset folder, --data-dir or run folder normlab may not open (writes are checked
            # before training; this is the read side, wherever it happens).
            exc = UserError(f"cannot open {exc.filename or 'a file'} (permission denied)",
                            "make it readable for this user, or point normlab at another file or folder")
        print(f"normlab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print("\nterminated (SIGTERM)" if terminated else "\ninterrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:
        # `normlab explain | head`: the reader left; say nothing more (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
