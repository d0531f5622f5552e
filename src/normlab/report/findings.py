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
from .aggregate import VariantRuns, mean_std

# Below this, a drop from the best epoch to the last is not worth a sentence.
NOTABLE_DROP = 0.5                    # accuracy points


def pct(value: float) -> str:
    return f"{value:.2f}%"


def pair_tests(groups: list[VariantRuns]) -> list[PairTest]:
    """Every pair of variants that finished at least one seed, on final test accuracy."""
    return compare_pairs({g.variant: g.final("test_acc") for g in groups if g.final("test_acc")})


def find_pair(tests: list[PairTest], x: str, y: str) -> PairTest | None:
    return next((t for t in tests if {t.a, t.b} == {x, y}), None)


def margin_statement(leader: VariantRuns, runner_up: VariantRuns, tests: list[PairTest] | None = None) -> str:
    """Is the leader's margin over the runner-up larger than the run-to-run noise?

    ``tests``: the pairwise tests of the whole run (so the p-value carries Holm's correction
    for every pair compared); without them only this pair is tested.
    """
    a, b = leader.final("test_acc"), runner_up.final("test_acc")
    if len(a) < 2 or len(b) < 2:
        seeds = "one seed" if min(len(a), len(b)) == 1 else "too few seeds"
        return (f"With {seeds} per variant the run-to-run noise is unknown, so this ranking alone does not show "
                f"a winner: another seed could reorder the variants. Rerun with `--seeds 3` (or more) to measure "
                f"the noise.")
    test = find_pair(tests or [], leader.variant, runner_up.variant) or compare_pairs({leader.variant: a, runner_up.variant: b})[0]
    std_a, std_b = mean_std(a)[1], mean_std(b)[1]
    noise = (f"seed-to-seed standard deviation {std_a:.2f} points over {len(a)} seeds of `{leader.variant}`, "
             f"{std_b:.2f} over {len(b)} of `{runner_up.variant}`")
    if not test.tested:
        return f"The margin is not tested: {test.why_not} ({noise}). No winner is claimed."
    corrected = f", {fmt_p(test.p_holm)} after Holm's correction for {test.family} pairs" if test.family > 1 else ""
    evidence = (f"Welch's t-test p = {fmt_p(test.p)}{corrected}; bootstrap 95% interval of the gap "
                f"{test.low:.2f} to {test.high:.2f} points; {noise}")
    if test.significant:
        return (f"The margin is significant at the 5% level ({evidence}): it is larger than the run-to-run noise "
                f"explains.")
    return (f"The margin is not significant at the 5% level ({evidence}): it is within the run-to-run noise, so no "
            f"winner is claimed. More seeds would detect a smaller real gap.")


def findings(groups: list[VariantRuns], planned_runs: int | None = None) -> list[str]:
    """Paragraphs (Markdown with `code` spans) about the run's variants."""
    out: list[str] = []
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

    ranked = sorted((g for g in groups if g.final("test_acc")), key=lambda g: -mean_std(g.final("test_acc"))[0])
    if not ranked:
        out.append("No variant has finished yet, so there is nothing to compare.")
        return out
    if len(ranked) == 1:
        g = ranked[0]
        out.append(f"Only `{g.variant}` finished ({pct(mean_std(g.final('test_acc'))[0])} final test accuracy), "
                   f"so there is nothing to compare it with.")
        return out

    leader, runner_up = ranked[0], ranked[1]
    lead_acc, second_acc = mean_std(leader.final("test_acc"))[0], mean_std(runner_up.final("test_acc"))[0]
    several = any(len(g.final("test_acc")) > 1 for g in ranked)
    mean_word = "mean " if several else ""
    out.append(f"`{leader.variant}` has the highest {mean_word}final test accuracy, {pct(lead_acc)}, "
               f"{lead_acc - second_acc:.2f} points ahead of `{runner_up.variant}` ({pct(second_acc)}). "
               + margin_statement(leader, runner_up, pair_tests(groups)))
    out.append(f"Final test accuracy, best first: "
               + ", ".join(f"`{g.variant}` {pct(mean_std(g.final('test_acc'))[0])}" for g in ranked) + ".")

    by_loss = sorted(ranked, key=lambda g: mean_std(g.final("test_loss"))[0])
    if by_loss[0] is not leader:
        out.append(f"The lowest {mean_word}final test loss is `{by_loss[0].variant}`'s "
                   f"({mean_std(by_loss[0].final('test_loss'))[0]:.4f}, against {mean_std(leader.final('test_loss'))[0]:.4f} "
                   f"for `{leader.variant}`): loss also weighs how confident the wrong answers are.")

    drops = []
    for g in ranked:
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
        fast, slow = min(per_epoch, key=per_epoch.get), max(per_epoch, key=per_epoch.get)
        if per_epoch[slow] < 1.1 * per_epoch[fast]:
            span = f"{per_epoch[fast]:.1f}"
            span += "" if f"{per_epoch[slow]:.1f}" == span else f"-{per_epoch[slow]:.1f}"
            out.append(f"Wall time per epoch was about the same for every variant ({span} s).")
            return out
        out.append(f"Wall time per epoch ranged from {per_epoch[fast]:.1f} s (`{fast}`) to {per_epoch[slow]:.1f} s "
                   f"(`{slow}`), trained one after another on the same device; timings on a shared machine vary.")
    return out


def run_findings(run) -> list[str]:
    """The findings of a loaded run (what the report's Findings section says)."""
    from .aggregate import group_runs
    from .style import run_variants
    planned = len(run.config.get("variants", [])) * run.config.get("seeds", 1) or None
    return findings(group_runs(run, run_variants(run)), planned)
