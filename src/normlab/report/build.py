"""Every figure, summary.txt, the report and the explanation page of a folder, from what it holds.

Reads results.json, misclassified.json, the checkpoints and the test set; never trains. The
engine calls ``write_report`` at the end of compare, train and sweep, and `normlab report DIR`
calls it again to rebuild everything from the folder alone. A sweep (a grid over training
options) gets its own page (report/sweep.py); a run (one value per option) gets this one.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ONECYCLE_MIN_STEPS, TrainConfig
from ..data import DATASETS, dataset_info
from ..errors import UserError
from ..runs import MISCLASSIFIED, Run, limit, load_run, most_confident_mistakes
from ..stats import spread as stats_spread
from ..storage import write_json, write_text
from ..variants import Variant
from .aggregate import (AT_BEST_VAL, MIN_SEEDS_FOR_INTERVAL, VariantRuns, group_runs, headline_key, headline_words, mean_std,
                        percent_interval)
from .curves import CURVES, write_curves
from .findings import STACKED_SHARE, gap_size, lr_search_section, pair_tests, run_findings, verdict
from .grids import write_grids
from .page import (REPORT_HTML, REPORT_MD, Code, Gallery, Image, Markdown, Page, Paragraph, Section, Table, Toc,
                   write_page)
from .style import plural, run_variants, seeds_text, variant_title
from .summary import summary_rows, summary_text

EXPLAIN_FIGURE = "explain.png"
EXPLAIN_MD, EXPLAIN_HTML = "explain.md", "explain.html"
SUMMARY = "summary.txt"


def missing_mistakes(run: Run) -> list[str]:
    """Finished variants whose first seed has no entry in misclassified.json (e.g. it was
    deleted) but has its checkpoint to recompute it from."""
    first_seed = min((r["seed"] for r in run.runs), default=None)
    have = run.misclassified
    return [r["variant"] for r in run.runs
            if r["seed"] == first_seed and r.get("status") == "done" and r["variant"] not in have
            and run.checkpoint_path(r["variant"], r["seed"]).is_file()]


def fill_misclassified(run: Run, test) -> None:
    """Recompute missing misclassified.json entries from the checkpoints, the same way the
    training run chose them (most confident first, ties by index)."""
    from ..data.batches import Normalizer
    from ..train import evaluate
    import torch

    todo = missing_mistakes(run)
    if not todo:
        return
    test = limit(test, run.config.get("test_size"))
    mistakes = dict(run.misclassified)
    for variant in todo:
        model = run.load_model(variant, run.record(variant)["seed"])
        result = evaluate(model, test.images, test.labels, Normalizer(test.info, torch.device("cpu")), keep_predictions=True)
        if not torch.isfinite(result.confidences).all():      # a damaged weight can overflow every logit
            raise UserError(f"{run.checkpoint_path(variant, run.record(variant)['seed'])} gives non-finite outputs on "
                            "the test set, so its weights are damaged", "delete it to retrain that variant")
        mistakes[variant] = most_confident_mistakes(result.predictions, result.confidences, test.labels)
    write_json(run.folder / MISCLASSIFIED, mistakes)


# ---- the run's page -----------------------------------------------------------------------

def spread_text(values: list[float], digits: int) -> str:
    """'92.31' for one value, '92.31 ± 0.12' (sample std) for several, '-' for none."""
    mean, std = mean_std(values)
    if not values:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def epoch_text(epochs: list[float]) -> str:
    """One seed's best epoch as the whole number it is ('8'); several seeds' as mean ± sd ('8.3 ± 1.2')."""
    return spread_text(epochs, 1 if len(epochs) > 1 else 0)


def interval(values: list[float]) -> str:
    """The 95% t-interval of a mean accuracy (percent_interval); '-' below MIN_SEEDS_FOR_INTERVAL seeds."""
    bounds = percent_interval(stats_spread(values))
    return "-" if bounds is None else f"{bounds[0]:.2f} to {bounds[1]:.2f}"


def results_table(groups: list[VariantRuns], key: str) -> Table:
    several = any(len(g.runs) > 1 for g in groups)
    chosen = key == AT_BEST_VAL
    header = (["variant", "seeds", "test acc % at best val epoch" if chosen else "final test acc %"]
              + (["95% interval of the mean"] if several else [])
              + (["best val epoch", "final test acc %"] if chosen else [])
              + ["final test loss", "params", "wall time s", "status"])
    rows = []
    for g in groups:
        params = sorted(set(int(p) for p in g.values("params")))
        finished = len(g.done)
        seeds = str(len(g.runs)) if finished in (0, len(g.runs)) else f"{finished} of {len(g.runs)}"
        rows.append([f"`{g.variant}`", seeds, spread_text(g.final(key), 2)]
                    + ([interval(g.final(key))] if several else [])
                    + ([epoch_text(g.final("best_val_epoch")), spread_text(g.final("test_acc"), 2)] if chosen else [])
                    + [spread_text(g.final("test_loss"), 4), ", ".join(f"{p:,}" for p in params) or "-",
                       spread_text([float(r["seconds"]) for r in g.runs if r.get("epochs")], 1), g.status_text()])
    return Table(header, rows, numeric=set(range(1, len(header) - 1)))


def table_note(groups: list[VariantRuns], key: str, config: dict) -> str:
    text = (f"Variants in the order they were given; the first accuracy column (the one the findings compare) is the "
            f"{headline_words(key, config.get('val_size', config.get('val')))}. Accuracies in percent; "
            f"wall time is the training time of one run, evaluation included.")
    if any(len(g.runs) > 1 for g in groups):
        text += (" With several seeds: mean ± sample standard deviation over the seeds that finished (\"2 of 3\": "
                 "one seed has not finished or diverged); wall time over every seed. The 95% t-interval of the mean "
                 "(under normal seed-to-seed noise, an interval made this way holds the true mean 95% of the time; "
                 "not where a rerun's mean would land) is kept inside 0-100 and shown from "
                 f"{MIN_SEEDS_FOR_INTERVAL} seeds: from 2 it is the mean ± 12.7 standard errors, too wide to mean "
                 "anything (\"-\", as where every seed gave the same value).")
    if any(r.get("stacked", 1) > 1 for g in groups for r in g.runs):
        text += f" Wall time of seeds trained as one stacked network (small batches on a CPU) is {STACKED_SHARE}."
    return text


def significance_section(groups: list[VariantRuns], key: str) -> Section | None:
    """Each pair of variants: is the gap in mean accuracy larger than seed-to-seed noise?"""
    tests = pair_tests(groups, key)
    if not tests or not any(len(g.final(key)) > 1 for g in groups):
        return None
    rows = [[f"`{t.a}` vs `{t.b}`", f"{t.n_a}, {t.n_b}", f"{t.difference:+.2f}", gap_size(t), verdict(t)] for t in tests]
    table = Table(["pair (higher mean first)", "seeds", "difference (points)", "size of the gap (bootstrap 95%)",
                   "verdict (Welch's t-test, Holm)"], rows, numeric={1, 2})
    family = max((t.family for t in tests), default=0)
    holm = f"with Holm's correction for the {family} pairs tested at once" if family > 1 else "(one pair: nothing to correct)"
    note = ("One verdict per pair, decided by Welch's t-test (no assumption that the two vary equally from seed to "
            f"seed) {holm}: significant when the adjusted p is below 0.05. The bootstrap interval resamples each variant's seeds and only sizes the gap; "
            "with 2-3 seeds it is rough and too narrow, so it never decides. Not significant means these seeds "
            "cannot tell the two apart, not that they are equal.")
    return Section("Are the differences real?", [table, Paragraph(note)]
                   + [Paragraph(t.sentence()) for t in tests if not t.tested])


def setup_paragraph(run) -> Paragraph:
    cfg, res = run.config, run.results
    seeds, first = cfg.get("seeds", 1), cfg.get("seed", 1)
    seed_text = seeds_text(first, seeds)
    lr = "searched per variant" if cfg.get("lr") == "auto" else cfg.get("lr") or {"sgd": 0.1, "adamw": 0.004}.get(cfg.get("optimizer"), "default")
    sizes = (cfg.get("train_size"), cfg.get("test_size"))
    info = dataset_info(run.dataset)
    data = info.title
    if all(isinstance(n, int) for n in sizes):
        held = f", {cfg['val_size']:,} validation" if isinstance(cfg.get("val_size"), int) and cfg["val_size"] else ""
        data += f": {sizes[0]:,} training{held} and {sizes[1]:,} test images"
    schedule, momentum = f"{cfg.get('schedule', '?')} schedule", cfg.get("momentum_used")
    steps = (cfg["epochs"] * (sizes[0] // cfg["batch_size"]) if cfg.get("schedule") == "onecycle"
             and all(isinstance(cfg.get(k), int) for k in ("epochs", "batch_size", "train_size")) else None)
    if steps is not None and steps < ONECYCLE_MIN_STEPS:
        schedule = (f"the lr held constant (one-cycle needs {ONECYCLE_MIN_STEPS} steps; this run took "
                    f"{plural(steps, 'step')})")
        momentum = f"momentum {cfg.get('momentum', 0.9):g}"
    parts = [data, f"{plural(cfg.get('epochs', '?'), 'epoch')}, batch {cfg.get('batch_size', '?')}",
             f"{cfg.get('optimizer', '?')} (peak lr {lr}, {schedule}, "
             f"{momentum + ', ' if momentum else ''}{cfg['trust_used'] + ', ' if cfg.get('trust_used') else ''}weight decay {cfg.get('weight_decay', '?')})",
             augmentation_text(info.pad_for(cfg.get("pad")), info.flip), seed_text,
             f"device {res.get('device_name') or res.get('device', '?')}",
             f"normlab {res.get('normlab', '?')}, torch {res.get('torch', '?')}"]
    when = res.get("started", "") + (f" to {res['finished']}" if res.get("finished") else "")
    return Paragraph("; ".join(str(p) for p in parts) + (f". Run {when}." if when else "."))


def augmentation_text(pad: int, flip: bool) -> str:
    """What the training batches went through (TrainBatches: flips only come with shifts)."""
    return (f"each training image shifted by up to {plural(pad, 'pixel')}{' and mirrored at random' if flip else ''}"
            if pad else "no augmentation")


def norm_layers_section(run) -> Section:
    """The run's own norm layers (a short table); the generic worked example is explain.md."""
    from ..explain.network import net_table, table_markdown
    table = table_markdown(net_table(run.dataset, run_variants(run), run.config.get("batch_size", TrainConfig.batch_size),
                                     run.config.get("model")), 3)
    table = table.split("\n", 2)[2]                  # its own heading is this section's title
    return Section("Normalization layers in this net", [
        Paragraph(f"How each normalization computes its statistics, worked by hand on a small input and checked "
                  f"against PyTorch, is on its own page: [{EXPLAIN_MD}]({EXPLAIN_MD})."), Markdown(table)])


def grids_blocks(run, groups: list[VariantRuns], grids: dict[str, Path]) -> list:
    blocks: list = []
    if grids:
        shown = max(len(v) for v in run.misclassified.values()) if run.misclassified else 0
        blocks.append(Paragraph(f"For each variant, the {'10' if shown >= 10 else f'{shown} (all it got wrong)'} "
                                f"test images its model (first seed, with the weights of the epoch validation chose) "
                                f"got wrong with the highest confidence: predicted / true class and the model's "
                                f"confidence. `misclassified.json` lists their test-set indices."))
        blocks.append(Gallery([Image(path.name, f"misclassified by {variant_title(v)}") for v, path in grids.items()]))
    names = lambda vs: ", ".join(f"`{v}`" for v in vs)
    unfinished = [g.variant for g in groups if g.variant not in grids and not g.done]
    orphans = [g.variant for g in groups if g.variant not in grids and g.done]
    if unfinished:
        blocks.append(Paragraph(f"No grid for {names(unfinished)}: "
                                + ("its run" if len(unfinished) == 1 else "their runs") + " did not finish."))
    if orphans:
        blocks.append(Paragraph(f"No grid for {names(orphans)}: no misclassified images saved and no checkpoint "
                                f"to recompute them from."))
    return blocks


def run_page(run, groups: list[VariantRuns], grids: dict[str, Path], summary: str, rows: list[dict]) -> Page:
    key = headline_key([r for g in groups for r in g.runs])
    sections = [Section("Setup", [setup_paragraph(run)]),
                Section("Results", [results_table(groups, key), Paragraph(table_note(groups, key, run.config))]),
                Section("Findings", [Paragraph(text) for text in run_findings(run)])]
    search = lr_search_section(run.results.get("lr_search"))
    sections += [search] if search else []
    significance = significance_section(groups, key)
    sections += [significance] if significance else []
    if (run.folder / CURVES).exists():
        sections.append(Section("Loss and accuracy per epoch", [Image(CURVES, "loss and accuracy per epoch")]))
    sections.append(Section("Most confidently wrong test images", grids_blocks(run, groups, grids)))
    sections.append(norm_layers_section(run))
    table = Table(["variant", "params", "in norm layers", "norm share"],
                  [[f"`{r['variant']}`", f"{r['params']:,}", f"{r['norm_params']:,}", f"{100 * r['norm_share']:.1f}%"]
                   for r in rows], numeric={1, 2, 3})
    sections.append(Section("Parameters", [
        Paragraph("Parameters of each variant's net and how many of them sit in its normalization layers "
                  "(torchinfo, one image in; the full layer tables are in `summary.txt`)."),
        table, Code(summary, summary="layer tables (summary.txt)")]))
    title = f"normlab report: {dataset_info(run.dataset).title}, " + ", ".join(g.variant for g in groups)
    return Page(title, sections, intro=[Toc()])


def explain_page(run) -> Page:
    from ..explain import explain
    from ..explain.render import to_markdown as explain_markdown
    return Page("normlab: how each normalization computes its statistics", [], intro=[
        Paragraph(f"The worked example behind [the report]({REPORT_MD}); `normlab explain` prints it in the terminal."),
        Markdown(explain_markdown(explain(), 2, EXPLAIN_FIGURE))])


def write_run_report(run: Run, data_dir=None, test=None, log=None) -> list[Path]:
    from ..explain import draw_figure
    say = log or (lambda line: None)
    if test is None and (run.misclassified or missing_mistakes(run)):
        say("report: reading the test set")
        test = run.test_set(data_dir)
    if test is not None:
        fill_misclassified(run, test)
    groups = group_runs(run, run_variants(run))
    say(f"report: drawing {CURVES}")
    written = [write_curves(run)]
    say("report: drawing the misclassified grids")
    grids = write_grids(run, test)
    written += list(grids.values())
    say(f"report: drawing {EXPLAIN_FIGURE}, summarizing the nets (torchinfo)")
    draw_figure(run.folder / EXPLAIN_FIGURE)
    written.append(run.folder / EXPLAIN_FIGURE)
    variants = [Variant.parse(g.variant) for g in groups]
    rows = summary_rows(variants, run.dataset, run.config.get("model"))
    summary = summary_text(variants, run.dataset, rows, run.config.get("model"))
    write_text(run.folder / SUMMARY, summary)
    written.append(run.folder / SUMMARY)
    say(f"report: writing {EXPLAIN_HTML} and {REPORT_HTML}")
    written += write_page(explain_page(run), run.folder, EXPLAIN_MD, EXPLAIN_HTML)
    written += write_page(run_page(run, groups, grids, summary, rows), run.folder, REPORT_MD, REPORT_HTML)
    return written


def write_report(folder_or_run, data_dir=None, test=None, log=None) -> list[Path]:
    """Every figure and page of a run or sweep folder (report.md, report.html, ...); returns their paths.

    ``test``: the test set if already in memory; otherwise it is read from ``data_dir`` (or
    where the run found it) before anything is written, so a missing dataset changes nothing.
    ``log``: called with a line before each step (e.g. ``print``), so a person sees what is drawn.
    """
    run = folder_or_run if isinstance(folder_or_run, Run) else load_run(folder_or_run)
    if run.dataset not in DATASETS and not Path(run.dataset).expanduser().exists():
        # Images of the user's own: dataset_info would say "--dataset ...", an option report has not.
        raise UserError(f"the run's dataset {run.dataset} is not there any more (moved or deleted)",
                        "put it back where it was: the report reads the dataset's classes and test images from there")
    if run.axes:
        from .sweep import write_sweep_report
        (log or (lambda line: None))("report: drawing the sweep figure and writing its report")
        return write_sweep_report(run.folder)
    return write_run_report(run, data_dir, test, log)
