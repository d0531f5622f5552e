"""Two batch-size sweeps of the same cells with different epoch budgets, cell by cell.

    python scripts/compare_budgets.py SHORT/results.json LONG/results.json [--norms bn,gn:4,ln]

Prints a Markdown table (docs/sweeps.md, "Twice the budget"): per (variant, batch size) the
test error at the best-validation epoch, mean ± std over the seeds, for each budget; the change;
the gain in best validation accuracy; the long runs' chosen epochs; and Welch's t-test of short
against long per cell, Holm-adjusted over the cells (normlab.stats, as the sweep report does).
"""

import argparse
import json
import statistics

from normlab.stats import holm, welch_p


def cells(path: str, norms: list[str]) -> tuple[int, dict]:
    """(epochs, {(variant, batch size): [(test error, best val acc, best val epoch), ...]})."""
    results = json.load(open(path))
    out = {}
    for run in results["runs"]:
        if run["variant"] in norms and run["status"] == "done":
            final = run["final"]
            out.setdefault((run["variant"], run["axes"]["batch_size"]), []).append(
                (100 - final["test_acc_at_best_val"], final["val_acc"], final["best_val_epoch"]))
    return results["config"]["epochs"], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("short")
    parser.add_argument("long")
    parser.add_argument("--norms", default="bn,gn:4,ln")
    args = parser.parse_args()
    norms = args.norms.split(",")
    (e1, short), (e2, long) = cells(args.short, norms), cells(args.long, norms)
    keys = sorted((k for k in long if k in short), key=lambda k: (norms.index(k[0]), k[1]))
    errors = {k: ([x[0] for x in short[k]], [x[0] for x in long[k]]) for k in keys}
    pvalues = [welch_p(*errors[k]) for k in keys]
    print(f"| variant | batch | test error {e1} ep | test error {e2} ep | {e2} - {e1} (points) | "
          f"val acc gain {e1} -> {e2} | best-val epochs ({e2} ep) | Welch p | Holm p |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, p, p_holm in zip(keys, pvalues, holm(pvalues)):
        a, b = errors[k]
        gain = statistics.mean(x[1] for x in long[k]) - statistics.mean(x[1] for x in short[k])
        print(f"| {k[0]} | {k[1]} | {statistics.mean(a):.2f} ± {statistics.stdev(a):.2f} | "
              f"{statistics.mean(b):.2f} ± {statistics.stdev(b):.2f} | {statistics.mean(b) - statistics.mean(a):+.2f} | "
              f"{gain:+.2f} | {', '.join(str(x[2]) for x in long[k])} | {p:.3f} | {p_holm:.3f} |")


if __name__ == "__main__":
    main()
