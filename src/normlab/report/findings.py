"""The findings: sentences generated from the numbers, each saying how sure it can be.

The leader is the variant with the highest mean final test accuracy over its finished seeds.
Whether its lead means anything depends on run-to-run noise, which needs more than one seed
per variant: with one seed the text says the noise is unknown and claims no winner. With
several, ``margin_statement`` says whether the margin is significant (Welch's t-test with
Holm's correction over every pair of variants, and a bootstrap interval of the gap; see
``normlab.stats``).
"""

from __future__ import annotations

from ..stats import PairTest, compare_pairs, fmt_p
from .aggregate import AT_BEST_VAL, VariantRuns, headline_key, mean_std
from .page import Paragraph, Section, Table
from .style import plural

# Below this, a drop from the best epoch to the last is not worth a sentence.
NOTABLE_DROP = 0.5                    # accuracy points


def pct(value: float) -> str:
    return f"{value:.2f}%"


def metric_words(key: str) -> str:
    return "test accuracy at the best-validation epoch" if key == AT_BEST_VAL else "final test accuracy"


def pair_tests(groups: list[VariantRuns], key: str) -> list[PairTest]:
    """Every pair of variants that finished at least one seed, on the ranked accuracy ``key``."""
    return compare_pairs({g.variant: g.final(key) for g in groups if g.final(key)})


def verdict(t: PairTest) -> str:
    """The one verdict of a comparison, with the test that decides it."""
    if not t.tested:
        return "not tested"
    holm = f"; Holm-adjusted for {plural(t.family, 'pair')}: {fmt_p(t.p_holm)}" if t.family > 1 else ""
    return f"{'significant' if t.significant else 'not significant'} at 5% (Welch's t-test p = {fmt_p(t.p)}{holm})"


def gap_size(t: PairTest, unit: str = "points") -> str:
    """The bootstrap interval, worded as the gap's size and never as a second verdict."""
    if not t.tested:
        return "-"
    text = f"{t.low:+.2f} to {t.high:+.2f} {unit}"
    if not t.significant and (t.low > 0 or t.high < 0):
        text += (f" (excludes 0 although the test does not find the gap: a percentile bootstrap over {min(t.n_a, t.n_b)} "
                 f"seeds leaves out a small sample's extra uncertainty, so it is too narrow; the t-test decides)")
    return text


def find_pair(tests: list[PairTest], x: str, y: str) -> PairTest | None:
    return next((t for t in tests if {t.a, t.b} == {x, y}), None)


def margin_statement(leader: VariantRuns, runner_up: VariantRuns, tests: list[PairTest] | None = None,
                     key: str | None = None) -> str:
    """Is the leader's margin over the runner-up larger than the run-to-run noise?

    ``tests``: the pairwise tests of the whole run (so the p-value carries Holm's correction
    for every pair compared); without them only this pair is tested. ``key``: the metric those
    tests compared (the findings' own), so the spread quoted is of the same numbers.
    """
    key = key or headline_key(leader.runs + runner_up.runs)
    a, b = leader.final(key), runner_up.final(key)
    if len(a) < 2 or len(b) < 2:
        if max(len(a), len(b)) < 2:
            return ("With one seed per variant the run-to-run noise is unknown, so this ranking alone does not show "
                    "a winner: another seed could reorder the variants. Rerun with `--seeds 3` (or more) to measure "
                    "the noise.")
        few = leader if len(a) < 2 else runner_up
        lost = len(few.runs) - len(few.final(key))
        gone = f" ({lost} did not finish or diverged)" if lost else ""
        return (f"`{few.variant}` has {plural(len(few.final(key)), 'finished seed')}{gone}, too few to measure its "
                f"run-to-run noise, so this margin is not tested and no winner is claimed.")
    test = find_pair(tests or [], leader.variant, runner_up.variant) or compare_pairs({leader.variant: a, runner_up.variant: b})[0]
    std_a, std_b = mean_std(a)[1], mean_std(b)[1]
    noise = (f"seed-to-seed standard deviation {std_a:.2f} points over {len(a)} seeds of `{leader.variant}`, "
             f"{std_b:.2f} over {len(b)} of `{runner_up.variant}`")
    if not test.tested:
        return f"The margin is not tested: {test.why_not} ({noise}). No winner is claimed."
    corrected = (f", {fmt_p(test.p_holm)} after Holm's correction for {plural(test.family, 'pair')}"
                 if test.family > 1 else "")
    evidence = f"Welch's t-test p = {fmt_p(test.p)}{corrected}"
    size = f"The gap's size, as a bootstrap 95% interval: {gap_size(test)}; {noise}."
    if test.significant:
        return (f"The margin is significant at the 5% level ({evidence}): it is larger than the run-to-run noise "
                f"explains. {size}")
    return (f"The margin is not significant at the 5% level ({evidence}): it is within the run-to-run noise, so no "
            f"winner is claimed. More seeds would detect a smaller real gap. {size}")


def findings(groups: list[VariantRuns], planned_runs: int | None = None, side_by_side: bool = False) -> list[str]:
    """Paragraphs (Markdown with `code` spans) about the run's variants."""
    out: list[str] = []
    key = headline_key([r for g in groups for r in g.runs])
    words = metric_words(key)
    runs = [r for g in groups for r in g.runs]
    finished = [r for r in runs if r.get("status") == "done"]
    unfinished = [r for g in groups for r in g.unfinished]
    if unfinished:
        out.append(f"This run is incomplete (still training, or interrupted): {len(finished)} of "
                   f"{planned_runs or len(runs)} runs finished. The findings below cover finished runs only; "
                   f"`normlab compare --resume` continues the rest.")
    for g in groups:
        for r in g.diverged:
            seed = f" (seed {r['seed']})" if len(g.runs) > 1 else ""
            out.append(f"`{g.variant}`{seed} {r['status']}: its training loss stopped being a finite number, so "
                       f"its curve ends there and it is left out of the comparison.")

    ranked = sorted((g for g in groups if g.final(key)), key=lambda g: -mean_std(g.final(key))[0])
    if not ranked:
        out.append("No variant has finished yet, so there is nothing to compare.")
        return out
    if len(ranked) == 1:
        g = ranked[0]
        out.append(f"Only `{g.variant}` finished ({pct(mean_std(g.final(key))[0])} {words}), "
                   f"so there is nothing to compare it with.")
        return out

    leader, runner_up = ranked[0], ranked[1]
    lead_acc, second_acc = mean_std(leader.final(key))[0], mean_std(runner_up.final(key))[0]
    several = any(len(g.final(key)) > 1 for g in ranked)
    mean_word = "mean " if several else ""
    out.append(f"`{leader.variant}` has the highest {mean_word}{words}, {pct(lead_acc)}, "
               f"{lead_acc - second_acc:.2f} points ahead of `{runner_up.variant}` ({pct(second_acc)}). "
               + margin_statement(leader, runner_up, pair_tests(groups, key), key))
    out.append(f"{words[0].upper() + words[1:]}, best first: "
               + ", ".join(f"`{g.variant}` {pct(mean_std(g.final(key))[0])}" for g in ranked) + ".")

    by_loss = sorted(ranked, key=lambda g: mean_std(g.final("test_loss"))[0])
    if by_loss[0] is not leader:
        out.append(f"The lowest {mean_word}final test loss is `{by_loss[0].variant}`'s "
                   f"({mean_std(by_loss[0].final('test_loss'))[0]:.4f}, against {mean_std(leader.final('test_loss'))[0]:.4f} "
                   f"for `{leader.variant}`): loss also weighs how confident the wrong answers are.")

    drops = []
    for g in ranked if key != AT_BEST_VAL else []:      # older records: the test peak, described, not chosen
        if not g.final("best_test_acc"):
            continue
        best, final = mean_std(g.final("best_test_acc"))[0], mean_std(g.final("test_acc"))[0]
        if best - final >= NOTABLE_DROP:
            drops.append(f"`{g.variant}` peaked at {pct(best)} and ended at {pct(final)}")
    if drops:
        out.append("Accuracy fell after its best epoch: " + "; ".join(drops) + ".")

    params = {g.variant: int(g.values("params")[0]) for g in groups if g.values("params")}
    if params and max(params.values()) > 1.2 * min(params.values()):
        big, small = max(params, key=params.get), min(params, key=params.get)
        out.append(f"`{big}` has {params[big]:,} parameters, {params[big] / params[small]:.1f}x the {params[small]:,} "
                   f"of `{small}` (see the parameter table for where they sit).")

    per_epoch = {}
    for g in ranked:
        times = [r["seconds"] / len(r["epochs"]) for r in g.done if r.get("epochs")]
        if times:
            per_epoch[g.variant] = mean_std(times)[0]
    if len(per_epoch) > 1:
        stacked = stacked_note(ranked)
        fast, slow = min(per_epoch, key=per_epoch.get), max(per_epoch, key=per_epoch.get)
        how = "trained side by side, sharing the machine" if side_by_side else "trained one after another on the same device"
        if per_epoch[slow] < 1.1 * per_epoch[fast] or f"{per_epoch[slow]:.1f}" == f"{per_epoch[fast]:.1f}":
            span = f"{per_epoch[fast]:.1f}"
            span += "" if f"{per_epoch[slow]:.1f}" == span else f"-{per_epoch[slow]:.1f}"
            out.append(f"Wall time per epoch was about the same for every variant ({span} s).{stacked}")
            return out
        out.append(f"Wall time per epoch ranged from {per_epoch[fast]:.1f} s (`{fast}`) to {per_epoch[slow]:.1f} s "
                   f"(`{slow}`), {how}; timings on a shared machine vary.{stacked}")
    return out


# What a stacked seed's seconds are (stacked.py): said in the run table's note, the wall-time
# finding and the sweep table's note, in these words.
STACKED_SHARE = "each seed's share of that network's time plus its own evaluation"


def stacked_note(groups) -> str:
    """A sentence for timings of runs trained K at a time as one network (stacked.py): each run's
    seconds are its share of the stack's time, so they are not one run's cost."""
    shares = {g.variant: max(r.get("stacked", 1) for r in g.runs) for g in groups}     # checked at the door (runs.py)
    stacked = {v: k for v, k in shares.items() if k > 1}
    if not stacked:
        return ""
    which = ", ".join(f"`{v}` ({k} at a time)" for v, k in stacked.items())
    return (f" Seeds of {which} were trained as one stacked network: their time is {STACKED_SHARE}, less than one "
            "such run alone would take.")


def search_sentences(search: dict | None) -> dict[str, str]:
    """variant -> "lr 0.05 chosen from 0.0125-0.2 by validation accuracy after 1 epoch, then the best 2
    after 3 epochs", from results.json's "lr_search" (``--lr auto``); {} without one."""
    if not search:
        return {}
    grid, rounds = search["grid"], search.get("rounds", [{"epochs": search["epochs"]}])
    how = f"after {plural(rounds[0]['epochs'], 'epoch')}" + "".join(
        f", then the best {r['per_variant']} after {plural(r['epochs'], 'epoch')}" for r in rounds[1:])
    return {v: f"lr {r['lr']:g} " + (r["note"] if "note" in r else
                                     f"chosen from {min(grid):g}-{max(grid):g} by validation accuracy {how}")
            for v, r in search["variants"].items()}


def cost_sentence(search: dict) -> str:
    """' The search cost 1.1 runs of 20 epochs per variant (200 s in all).' ('' for an older record without
    its cost): the unit is a run of the longest budget when epochs are swept."""
    if "cost_runs" not in search:
        return ""
    unit = f" of {plural(search['cost_run_epochs'], 'epoch')}" if "cost_run_epochs" in search else ""
    took = f" ({search['seconds']:.0f} s in all)" if "seconds" in search else ""
    return f" The search cost {search['cost_runs']:g} runs{unit} per variant{took}."


def lr_search_section(search: dict | None) -> Section | None:
    """--lr auto: what each variant reached on the validation split at each lr (and round), and the choice."""
    if not search:
        return None
    rounds = search.get("rounds", [{"folder": search["folder"], "epochs": search["epochs"]}])
    cell = lambda t: "-" if t["val_acc"] is None else f"{t['val_acc']:.2f} ({t['val_loss']:.3f})"
    rows, header = [], ["variant", "round"] + [f"lr {lr:g}" for lr in search["grid"]] + ["chosen lr"]
    for v, r in search["variants"].items():
        for k, tried in enumerate([r["tried"], r.get("round2")][:len(rounds)]):
            at = {t["lr"]: t for t in tried or []}
            last = k == len(rounds) - 1               # the round that chose: its chosen cell in bold
            mark = lambda lr: "" if lr not in at else f"**{cell(at[lr])}**" if last and lr == r["lr"] else cell(at[lr])
            rows.append([f"`{v}`" if k == 0 else "", f"{k + 1} ({plural(rounds[k]['epochs'], 'epoch')})"]
                        + [mark(lr) for lr in search["grid"]] + [f"{r['lr']:g}" if last else ""])
    links = ", ".join(f"[{r['folder']}/report.md]({r['folder']}/report.md)" for r in rounds)
    return Section("Learning rate search", [
        Paragraph(" ".join(f"`{v}`: {text}." for v, text in search_sentences(search).items()) + cost_sentence(search)),
        Table(header, rows, numeric=set(range(2, len(header)))),
        Paragraph(f"Validation accuracy % (validation loss) of each search run at its best-validation epoch, one seed, "
                  f"each trained from scratch with the schedule compressed into its epochs"
                  f"{'; round 2 trains the best lrs of round 1 again, longer' if len(rounds) > 1 else ''}; chosen (bold) by "
                  f"{search['chosen_by']}. The test set played no part. Each round is a run folder of its own: {links}.")])


def run_findings(run) -> list[str]:
    """The findings of a loaded run (what the report's Findings section says)."""
    from .aggregate import group_runs
    from .style import run_variants
    planned = len(run.config.get("variants", [])) * run.config.get("seeds", 1) or None
    from ..train import recipe_note
    groups = group_runs(run, run_variants(run))
    executor = run.results.get("executor", {})
    side_by_side = executor.get("executor", "local") != "local" or executor.get("workers", 1) > 1   # workers or Ray
    if len(groups) < 2:
        return findings(groups, planned, side_by_side)
    # Each variant's settings as its runs had them (the lr differs per variant after --lr auto).
    configs = {g.variant: {**run.config, "lr": sorted({r.get("lr") for r in g.runs}, key=str)} for g in groups}
    return findings(groups, planned, side_by_side) + [recipe_note(configs, search_sentences(run.results.get("lr_search")))]
