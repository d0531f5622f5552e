"""A sweep's evidence: sweep.png (the ranked error against each swept option, per norm, with
error bars), sweep.csv (the table behind it) and report.md / report.html.

Read from the sweep's results.json alone, like a run's report. The figure is the Group
Normalization paper's figure 1 (Wu & He 2018) for any option: x the first swept axis (log for
lr and batch size), y the test error in percent (at the best-validation epoch when the runs
held out a validation split, else after the last epoch), one line per variant through the mean
over seeds with bars one sample standard deviation either side; a second swept axis gives one
panel per value.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rc_context

from ..errors import UserError
from ..runs import RESULTS as RESULTS_NAME, SEARCH_ROUND, read_results
from ..stats import PairTest, Spread, compare_pairs, holm_over, spread
from ..storage import write_bytes, write_text
from .aggregate import AT_BEST_VAL, headline_key, headline_words, percent_interval
from .findings import STACKED_SHARE, gap_size, lr_search_section, verdict
from .page import REPORT_HTML, REPORT_MD, Image, Page, Paragraph, Section, Table, Toc, write_page
from .style import FONT, new_figure, plural, png_bytes, seeds_text, variant_colors, variant_title

SWEEP_PNG, SWEEP_CSV = "sweep.png", "sweep.csv"
VAL_KEY = "val_acc"                              # final's validation accuracy at the best-validation epoch
LOG_AXES = {"batch_size": 2, "lr": 10}           # axis -> log base
# A run has converged when the last quarter of its epochs raised its best validation accuracy by
# less than PLATEAU points: its curve had flattened before the end, so more epochs of the same
# schedule would move it little. Where epochs is swept, the direct check replaces it: two
# neighbouring budgets whose mean best validation accuracies differ by less than PLATEAU points are
# both on the plateau. Judged on the validation split, never on the test set.
PLATEAU = 1.0


def late_gain(run: dict) -> float | None:
    """Points of validation accuracy the last quarter of the epochs added to the best before it
    (None without a validation split or with fewer than 4 epochs)."""
    accs = [e.get("val_acc") for e in run.get("epochs", [])]
    if len(accs) < 4 or not all(isinstance(a, (int, float)) for a in accs):
        return None
    cut = len(accs) - len(accs) // 4
    return max(accs) - max(accs[:cut])


@dataclass
class Point:
    """One (axis values, variant): the test errors of its runs over the seeds that finished."""
    at: tuple                          # the value of each swept axis, in the order of Sweep.axes
    variant: str
    lr: float
    planned: int
    errors: list[float]
    seconds: list[float]
    gains: list                        # late_gain of each finished run (None: not judged)
    val_best: list[float]              # best validation accuracy of each finished run
    budget_gain: float | None = None   # epochs swept: mean val_best gained between this budget and its neighbour

    @property
    def unconverged(self) -> int:
        if self.budget_gain is not None:
            return len(self.errors) if self.budget_gain >= PLATEAU else 0
        return sum(g is not None and g >= PLATEAU for g in self.gains)

    @property
    def spread(self) -> Spread:
        return spread(self.errors)


@dataclass
class Sweep:
    results: dict
    axes: dict[str, list]              # axis -> its values, in the order swept
    runs: list[dict]                   # each with "axes": {axis: value}

    @property
    def search_round(self) -> int:
        """Which round of a --lr auto search this folder is; 0 for a sweep of the user's."""
        return self.results.get(SEARCH_ROUND, 0)

    @property
    def key(self) -> str:
        # A search round is shown by what it chooses on: the validation accuracy at each run's
        # best-validation epoch. Its test accuracies choose nothing, so its report does not show them.
        return VAL_KEY if self.search_round else headline_key(self.runs)

    @property
    def metric(self) -> str:
        """The error the page and the figure show: "test error" or, in a search round, "validation error"."""
        return "validation error" if self.search_round else "test error"


def as_sweep(results: dict) -> Sweep:
    """results.json of a grid (checked at the door by runs.read_results) as a Sweep. Swept with
    another axis, epochs goes last: it is the budget, so it becomes the figure's panels and the
    question (does the error change along batch size?) is asked along the other axis."""
    axes = dict(results["config"]["axes"])
    if "epochs" in axes and len(axes) > 1:
        axes["epochs"] = sorted(axes.pop("epochs"))      # smallest budget first, also when resumed with a smaller one
    return Sweep(results, axes, results["runs"])


def load_sweep(folder) -> Sweep:
    """A sweep folder's results, read through the one door every results.json goes through."""
    results = read_results(folder)
    if not results["config"]["axes"]:
        raise UserError(f"{folder} holds a comparison, not a sweep", "rebuild its report with normlab report")
    return as_sweep(results)


def best_val(run: dict) -> float | None:
    accs = [e.get("val_acc") for e in run.get("epochs", [])]
    return max(accs) if accs and all(isinstance(a, (int, float)) for a in accs) else None


def points(sweep: Sweep) -> list[Point]:
    names = list(sweep.axes)
    variants = list(dict.fromkeys(sweep.results["config"].get("variants", []) + [r["variant"] for r in sweep.runs]))
    out = []
    for at in itertools.product(*sweep.axes.values()):
        for v in variants:
            mine = [r for r in sweep.runs if r["variant"] == v and tuple(r["axes"].get(a) for a in names) == at]
            done = [r for r in mine if r.get("status") == "done" and sweep.key in r.get("final", {})]
            if mine:
                out.append(Point(at, v, float(mine[0].get("lr", float("nan"))), len(mine),
                                 [100.0 - float(r["final"][sweep.key]) for r in done],
                                 [float(r.get("seconds", 0.0)) for r in done], [late_gain(r) for r in done],
                                 [b for b in map(best_val, done) if b is not None]))
    if "epochs" in names:
        judge_budgets(out, names.index("epochs"), sorted(sweep.axes["epochs"]))
    return out


def judge_budgets(pts: list[Point], axis: int, budgets: list) -> None:
    """The direct convergence check of a sweep over epochs: each point's budget_gain is the mean
    best validation accuracy of the next larger budget minus its own (the largest budget: its own
    minus the next smaller one's), so both points of a neighbouring pair share one verdict."""
    if len(budgets) < 2:
        return
    at = {(p.at[:axis] + p.at[axis + 1:], p.variant, p.at[axis]): p for p in pts}
    mean = lambda p: sum(p.val_best) / len(p.val_best) if p and p.val_best else None
    for p in pts:
        rest, k = p.at[:axis] + p.at[axis + 1:], budgets.index(p.at[axis])
        lo, hi = (k, k + 1) if k + 1 < len(budgets) else (k - 1, k)
        a, b = mean(at.get((rest, p.variant, budgets[lo]))), mean(at.get((rest, p.variant, budgets[hi])))
        p.budget_gain = None if a is None or b is None else b - a


def sweep_csv(sweep: Sweep) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    lr = [] if "lr" in sweep.axes else ["lr"]
    err = "val_err" if sweep.search_round else "test_err"
    writer.writerow([*sweep.axes, "variant", *lr, "seeds_done", "seeds_planned", *(f"{err}_{k}" for k in (
                         "mean", "std", "ci95_low", "ci95_high", "min", "max")), "seconds_mean",
                     "val_best_mean", "budget_val_gain", "late_val_gain_max", "seeds_converged"])
    num = lambda x, d=4: "" if x is None or x != x else f"{x:.{d}f}"
    for p in points(sweep):
        s, e = p.spread, p.errors
        low, high = percent_interval(s) or (None, None)       # as the report: in [0, 100], from 3 seeds
        writer.writerow([*p.at, p.variant, *([f"{p.lr:.6g}"] if lr else []), s.n, p.planned, num(s.mean), num(s.std),
                         num(low), num(high), num(min(e) if e else None), num(max(e) if e else None),
                         num(sum(p.seconds) / len(p.seconds) if p.seconds else None, 2),
                         num(sum(p.val_best) / len(p.val_best) if p.val_best else None, 2), num(p.budget_gain, 2),
                         num(max((g for g in p.gains if g is not None), default=None), 2),
                         "" if all(g is None for g in p.gains) and p.budget_gain is None else len(p.errors) - p.unconverged])
    return buffer.getvalue()


def metric_label(sweep: Sweep) -> str:
    return (f"{sweep.metric} (%) at the best-validation epoch" if sweep.key in (AT_BEST_VAL, VAL_KEY)
            else "test error (%), last epoch")


def plot_sweep(sweep):
    """The figure (a matplotlib Figure): the error against the first swept axis, one line per
    variant; one panel per combination of the other axes."""
    sweep = sweep if isinstance(sweep, Sweep) else as_sweep(sweep)
    pts = points(sweep)
    names = list(sweep.axes)
    x_axis, xs = names[0], list(sweep.axes[names[0]])
    numeric = all(isinstance(x, (int, float)) for x in xs)
    place = (lambda x: x) if numeric else xs.index             # options like "sgd"/"adamw" stand in a row
    panels = list(itertools.product(*[sweep.axes[a] for a in names[1:]]))
    variants = point_variants(sweep, pts)
    colors = variant_colors(variants)
    with rc_context(FONT):
        # Wider for more than three variants: their legend goes in two columns under the plot.
        fig = new_figure(min(max(7.5 * len(panels), 10 if len(variants) > 3 else 0), 22), 6.2)
        axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        for ax, rest in zip(axes, panels):
            for k, v in enumerate(variants):
                mine = [p for p in pts if p.variant == v and p.at[1:] == rest and p.errors]
                if not mine:
                    continue
                # Nudge each variant sideways a little so error bars at one x do not hide each other.
                nudge = 0.06 * (k - (len(variants) - 1) / 2)
                x = [place(p.at[0]) * 2 ** nudge if x_axis in LOG_AXES else place(p.at[0]) + nudge * 0.5 for p in mine]
                seeds = sorted({p.spread.n for p in mine})
                label = variant_title(v) + (f", {seeds[0]} seeds" if len(seeds) == 1 and seeds[0] > 1 else
                                            f", {seeds[0]}-{seeds[-1]} seeds" if len(seeds) > 1 else "")
                ax.errorbar(x, [p.spread.mean for p in mine], yerr=[p.spread.std or 0.0 for p in mine], color=colors[v],
                            marker="o", ms=5, lw=2, capsize=4, capthick=1.5, label=label)
            if numeric and x_axis in LOG_AXES:
                ax.set_xscale("log", base=LOG_AXES[x_axis])
            ax.set_xticks([place(x) for x in xs], [f"{x:g}" if numeric else str(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel(x_axis.replace("_", " ") + (" (log scale)" if x_axis in LOG_AXES else ""))
            ax.set_title(", ".join(f"{a} = {val}" for a, val in zip(names[1:], rest)), fontsize=11)
            ax.grid(True, alpha=0.3)
        axes[0].set_ylabel(metric_label(sweep))
        # Below the plot, not on it: with six variants a legend inside covered their lines.
        shown = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(list(shown.values()), list(shown), title="mean ± std over seeds", loc="outside lower center",
                   ncols=2 if len(shown) > 3 else 1, fontsize=10)
        cfg = sweep.results["config"]
        fig.suptitle(f"{title_of(sweep.results)}: test error against {x_axis.replace('_', ' ')}, {budget_text(sweep)}")
    return fig


def point_variants(sweep: Sweep, pts: list[Point]) -> list[str]:
    """The variants with points, in the order they were given (not the order of their first point:
    a search's second round starts with the variant whose best lrs are the smallest)."""
    present = {p.variant for p in pts}
    return [v for v in dict.fromkeys(sweep.results["config"].get("variants", []) + [p.variant for p in pts]) if v in present]


def budget_text(sweep: Sweep) -> str:
    """"20 epochs per run", or the swept budgets ("30 or 60 epochs per run")."""
    if "epochs" in sweep.axes:
        *rest, last = map(str, sweep.axes["epochs"])
        return f"{', '.join(rest)} or {last} epochs per run" if rest else plural(int(last), "epoch") + " per run"
    return f"{plural(sweep.results['config'].get('epochs'), 'epoch')} per run"


def title_of(results: dict) -> str:
    from ..data import dataset_info
    try:
        return dataset_info(results["dataset"]).title
    except (UserError, KeyError):
        return str(results.get("dataset", "?"))


def pair_rows(pts: list[Point]) -> list[list[str]]:
    """At each grid point, every pair of variants; Holm's correction over every pair of the table, so
    the chance of any false "significant" in it stays at 5% (per point, 42 tests held none of that)."""
    tests = [(at, t) for at in dict.fromkeys(p.at for p in pts)
             for t in compare_pairs({p.variant: p.errors for p in pts if p.at == at and p.errors})]
    holm_over([t for _, t in tests])
    return [[*map(str, at), f"`{t.a}` vs `{t.b}`", f"{t.difference:+.2f}", gap_size(t), verdict(t)] for at, t in tests]


def along_axis_tests(sweep: Sweep, pts: list[Point]) -> list[PairTest]:
    """Per variant (and value of the other axes): the error at the first value of the first axis
    against the last, of the values it has finished runs at (a search's second round trains each
    variant at its own two lrs); Holm over all of them."""
    name = list(sweep.axes)[0]
    tests = []
    for rest in dict.fromkeys(p.at[1:] for p in pts):
        for v in dict.fromkeys(p.variant for p in pts):
            line = [p for p in pts if p.variant == v and p.at[1:] == rest and p.errors]
            if len(line) < 2:
                continue
            p, q = line[0], line[-1]
            where = "".join(f", {a} {x}" for a, x in zip(list(sweep.axes)[1:], rest))
            (t,) = compare_pairs({f"{v} at {name} {p.at[0]}{where}": p.errors, f"{v} at {name} {q.at[0]}{where}": q.errors})
            tests.append(t)
    return holm_over(tests)


def cell_text(p: Point) -> str:
    s = p.spread
    if not s.n:
        return "-"
    text = f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else "")
    text += f" ({s.n} of {p.planned})" if s.n < p.planned else ""
    return text + (" †" if p.unconverged else "")


# Schedules that bring the lr close to zero in the last quarter: the annealing alone adds
# accuracy there. bn/gn:4/ln on Fashion-MNIST (docs/sweeps.md): 41 of 63 runs "not converged" by
# this rule at 40 epochs, while doubling from 20 to 40 epochs raised the mean best validation
# accuracy by less than 1 point in 6 of the 21 cells.
ANNEALED = {"onecycle": "one-cycle", "cosine": "cosine"}


def budget_section(pts: list[Point], budgets: list, axis: int) -> Section:
    """Convergence where epochs is swept: each pair of neighbouring budgets compared on validation accuracy."""
    at = {(p.at[:axis] + p.at[axis + 1:], p.variant, p.at[axis]): p for p in pts}
    pairs = [(rest, v, at[(rest, v, lo)], at[(rest, v, hi)]) for (rest, v, e) in at for lo, hi in zip(budgets, budgets[1:])
             if e == lo and (rest, v, hi) in at and at[(rest, v, lo)].val_best and at[(rest, v, hi)].val_best]
    listed = ", ".join(f"{a} and {b}" for a, b in zip(budgets, budgets[1:]))
    rule = (f"Judged directly, by training every point with more than one budget ({plural(len(budgets), 'value')} of "
            f"epochs: {listed}): two neighbouring budgets whose mean best validation accuracies (over the seeds) differ "
            f"by less than {PLATEAU:g} point{'s' if PLATEAU != 1 else ''} are both on the plateau, so more epochs would "
            f"move the point little. Judged on the validation split, never on the test set.")
    mean = lambda p: sum(p.val_best) / len(p.val_best)
    bad = [pair for pair in pairs if mean(pair[3]) - mean(pair[2]) >= PLATEAU]
    if not pairs:
        verdict_text = "No point had finished runs at two budgets with a validation split, so nothing was judged."
    elif not bad:
        verdict_text = (f"All {len(pairs)} pairs of budgets agree: every point is on its plateau; the largest gain was "
                        f"{max(mean(b) - mean(a) for _, _, a, b in pairs):+.2f} points.")
    else:
        verdict_text = (f"In {len(bad)} of {len(pairs)} pairs the longer budget still gained {PLATEAU:g} point"
                        f"{'s' if PLATEAU != 1 else ''} or more: those points are not shown on the plateau (marked † in "
                        f"the table), and their errors are upper bounds of what the norm reaches with a longer budget.")
    table = Table(["point", "variant", "epochs", "mean best val acc (%)", "gain (points)", "on the plateau?"],
                  [[", ".join(map(str, rest)) or "-", f"`{v}`", f"{a.at[axis]} -> {b.at[axis]}",
                    f"{mean(a):.2f} -> {mean(b):.2f}", f"{mean(b) - mean(a):+.2f}",
                    "no †" if mean(b) - mean(a) >= PLATEAU else "yes"] for rest, v, a, b in pairs], numeric={4})
    return Section("Did every run converge?", [Paragraph(rule + " " + verdict_text)] + ([table] if pairs else []))


def convergence_section(pts: list[Point], epochs, schedule: str | None = None, budgets: list | None = None,
                        axis: int = 0) -> Section:
    if budgets and len(budgets) > 1:
        return budget_section(pts, budgets, axis)
    judged = [g for p in pts for g in p.gains if g is not None]
    if not judged:
        why = ("trained fewer than 4 epochs, too few for a last quarter to read" if epochs and int(epochs) < 4
               else "held out no validation split" if epochs else "held out no validation split, or trained fewer than 4 epochs")
        return Section("Did every run converge?", [Paragraph(
            f"Not judged: convergence is read from the validation accuracy per epoch, and these runs {why}.")])
    # epochs is None where it is a swept axis: each run's last quarter is then its own.
    last = f"its last {plural(max(1, int(epochs) // 4), 'epoch')} (the last quarter)" if epochs else "the last quarter of its epochs"
    check = (f"the same sweep with twice the epochs (`--over epochs={epochs},{2 * int(epochs)}`)" if epochs
             else "the error along the swept epochs above")
    rule = (f"A run counts as converged when {last} raised its best "
            f"validation accuracy by less than {PLATEAU:g} point{'s' if PLATEAU != 1 else ''}: its curve had flattened "
            f"before the end. Judged on the validation split, never on the test set."
            + (f" The {ANNEALED[schedule]} schedule anneals the lr to near zero in that quarter, which adds accuracy by "
               f"itself, so the rule is strict; the direct check is {check}." if schedule in ANNEALED else ""))
    bad = [p for p in pts if p.unconverged]
    verdict_text = (f"All {len(judged)} judged runs converged by this rule; the largest late gain was "
                    f"{max(judged):.2f} points." if not bad else
                    f"{sum(p.unconverged for p in bad)} of {len(judged)} runs had not converged (marked † in the "
                    f"table); their errors are upper bounds of what the norm reaches with a longer budget:")
    blocks = [Paragraph(rule + " " + verdict_text)]
    if bad:
        blocks.append(Table(["point", "variant", "runs not converged", "largest late gain (points)"],
                            [[", ".join(map(str, p.at)), f"`{p.variant}`", f"{p.unconverged} of {len(p.gains)}",
                              f"{max(g for g in p.gains if g is not None):.2f}"] for p in bad], numeric={2, 3}))
    return Section("Did every run converge?", blocks)


def sweep_page(sweep: Sweep) -> Page:
    results, cfg = sweep.results, sweep.results["config"]
    pts = points(sweep)
    names, variants = list(sweep.axes), point_variants(sweep, pts)
    at = {(p.at, p.variant): p for p in pts}
    done = sum(r.get("status") == "done" for r in sweep.runs)
    ex = results.get("executor", {})
    where = ex.get("executor", "?") + (f", {ex['workers']} workers" if ex.get("workers", 1) > 1 else "")
    swept = "; ".join(f"{a} {', '.join(map(str, vals))}" for a, vals in sweep.axes.items())
    held = f", {cfg['val_size']:,} validation" if cfg.get("val_size") else ""
    setup = (f"{cfg.get('train_size', '?'):,} training{held} and {cfg.get('test_size', '?'):,} test images; "
             f"{budget_text(sweep)}; {cfg.get('optimizer')} ({cfg.get('schedule')} schedule, "
             f"{cfg['momentum_used'] + ', ' if cfg.get('momentum_used') else ''}{cfg['trust_used'] + ', ' if cfg.get('trust_used') else ''}weight decay {cfg.get('weight_decay')}){'; ' + cfg['lr_rule'] if cfg.get('lr_rule') else ''}; "
             f"{seeds_text(cfg.get('seed', 1), cfg.get('seeds', 1))}; "
             f"{done} of {plural(len(sweep.runs), 'run')} finished; executor {where}; driver "
             f"{results.get('device_name', '?')}, torch {results.get('torch', '?')}. Swept: {swept}.")

    def peak_lr(a) -> str:
        # One number where every variant trained at it; each variant's own under --lr auto.
        lrs = {v: f"{at[(a, v)].lr:.4g}" for v in variants if (a, v) in at}
        return next(iter(lrs.values())) if len(set(lrs.values())) == 1 else ", ".join(f"{v} {lr}" for v, lr in lrs.items())
    table = Table([*names, *(["peak lr"] if "lr" not in names else []), *[f"`{v}`" for v in variants]],
                  [[*map(str, a), *([peak_lr(a)] if "lr" not in names else []),
                    *[cell_text(at[(a, v)]) if (a, v) in at else "-" for v in variants]]
                   for a in dict.fromkeys(p.at for p in pts)], numeric=set(range(len(names) + len(variants) + 1)))
    along = along_axis_tests(sweep, pts)
    x_axis = names[0].replace("_", " ")
    verdict_note = ("One verdict per comparison, decided by Welch's t-test with Holm's correction; the bootstrap "
                    "interval resamples the seeds and only sizes the gap (with 2-3 seeds it is rough and too narrow).")
    if sweep.search_round:
        what = (f"validation accuracy at each run's best-validation epoch (what the search chooses by)")
        hidden = f" The runs' test accuracies are in {RESULTS_NAME}; they choose nothing and are not shown here."
        intro = [Paragraph(f"Round {sweep.search_round} of the learning-rate search of `--lr auto`, a run folder of its "
                           f"own; the experiment's report (one folder up) gives the choice and the table of both rounds. "
                           f"Every number here is measured on the validation split.")]
    else:
        what, intro, hidden = headline_words(sweep.key, cfg.get('val_size', cfg.get('val'))), [], ""
    sections = [
        Section("Setup", [*intro, Paragraph(setup), Image(SWEEP_PNG, f"{sweep.metric} against {x_axis}")]),
        Section(f"{sweep.metric.capitalize()} (%)", [table, Paragraph(
            f"Mean ± sample standard deviation over the seeds that finished (\"2 of 3\": a seed has not finished or "
            f"diverged) of the {what}, as an error.{hidden} "
            f"`{SWEEP_CSV}` has the same numbers with the 95% t-interval of each mean, the min and max, and the "
            f"seconds per run (for seeds trained as one stacked network, {STACKED_SHARE})." + (" † marks a point where a run had not converged (next section)."
                                   if any(p.unconverged for p in pts) else ""))]),
        convergence_section(pts, None if "epochs" in names else cfg.get("epochs"), cfg.get("schedule"),
                            sorted(sweep.axes["epochs"]) if "epochs" in names else None,
                            names.index("epochs") if "epochs" in names else 0)]
    sections.append(Section(f"Does the error change along {x_axis}?",
                            [Table(["comparison (higher error first)", "difference (points)", "size (bootstrap 95%)", "verdict"],
                                   [[f"`{t.a}` vs `{t.b}`", f"{t.difference:+.2f}", gap_size(t), verdict(t)]
                                    for t in along], numeric={1}), Paragraph(verdict_note)]
                            if along else [Paragraph("Needs two values of the axis with finished runs.")]))
    if not sweep.search_round:         # a search ranks each variant's lrs, not the norms against each other
        sections.append(Section("Which norm is better at each point?", [
            Table([*names, "pair (higher error first)", "difference (points)", "size (bootstrap 95%)", "verdict"],
                  pair_rows(pts), numeric={len(names) + 1}), Paragraph(verdict_note + " A lower error is better.")]))
    sections += [lr_search_section(results["lr_search"])] if results.get("lr_search") else []
    title = f"normlab sweep: {title_of(results)}, {', '.join(variants)} over {', '.join(names)}"
    return Page(title, sections, intro=[Toc()])


def write_sweep_report(folder) -> list[Path]:
    """sweep.png, sweep.csv, report.md and report.html from the folder's results.json."""
    folder = Path(folder)
    sweep = load_sweep(folder)
    write_bytes(folder / SWEEP_PNG, png_bytes(plot_sweep(sweep)))
    write_text(folder / SWEEP_CSV, sweep_csv(sweep))
    return [folder / SWEEP_PNG, folder / SWEEP_CSV] + write_page(sweep_page(sweep), folder, REPORT_MD, REPORT_HTML)
