# usage: python scripts/compare_budgets.py SHORT/results.json LONG/results.json  (docs/sweeps.md, "Twice the budget")
"""20 vs 40 epochs per (norm, batch) cell: mean test error at the best-validation epoch and
validation accuracy, over 3 seeds; Welch t-test of 20 vs 40 per cell, Holm across cells."""
import json, sys, statistics as st
from scipy import stats
def cells(path, norms):
    r = json.load(open(path)); out = {}
    for run in r["runs"]:
        if run["variant"] in norms and run["status"] == "done":
            f = run["final"]
            out.setdefault((run["variant"], run["axes"]["batch_size"]), []).append((100 - f["test_acc_at_best_val"], f["val_acc"], f["best_val_epoch"]))
    return out
norms = ("bn", "gn:4", "ln")
a, b = cells(sys.argv[1], norms), cells(sys.argv[2], norms)
rows, ps = [], []
for key in sorted(b, key=lambda k: (norms.index(k[0]), k[1])):
    if key not in a: continue
    ea, eb = [x[0] for x in a[key]], [x[0] for x in b[key]]
    va, vb = [x[1] for x in a[key]], [x[1] for x in b[key]]
    p = stats.ttest_ind(ea, eb, equal_var=False).pvalue if len(ea) > 1 and len(eb) > 1 else float("nan")
    rows.append((key, st.mean(ea), st.stdev(ea), st.mean(eb), st.stdev(eb), st.mean(vb) - st.mean(va), [x[2] for x in b[key]], p)); ps.append(p)
order = sorted(range(len(ps)), key=lambda i: ps[i]); m = len(ps); adj = [0.0] * m; run = 0.0
for rank, i in enumerate(order):
    run = max(run, min(1.0, (m - rank) * ps[i])); adj[i] = run
print("| variant | batch | test error 20 ep | test error 40 ep | 40 - 20 (points) | val acc gain 20 -> 40 | best-val epochs (40 ep) | Welch p | Holm p |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (key, ma, sa, mb, sb, dv, ep, p), q in zip(rows, adj):
    print(f"| {key[0]} | {key[1]} | {ma:.2f} ± {sa:.2f} | {mb:.2f} ± {sb:.2f} | {mb - ma:+.2f} | {dv:+.2f} | {', '.join(map(str, ep))} | {p:.3f} | {q:.3f} |")
