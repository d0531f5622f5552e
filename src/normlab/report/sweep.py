"""A sweep's evidence: sweep.png (test error against batch size per norm, with error bars),
sweep.csv (the table behind it) and sweep.md (figure, table, significance, findings).

Read from the sweep's results.json alone, like a run's report. The figure is the Group
Normalization paper's figure 1 (Wu & He 2018) on our data: one line per variant, x the batch
size on a log2 axis, y the final test error in percent, the line through the mean over seeds
and the bars one sample standard deviation either side.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rc_context

from ..errors import UserError
from ..runs import load_run
from ..stats import PairTest, Spread, compare_pairs, fmt_p, holm, spread
from ..storage import write_bytes, write_text
from .style import FONT, new_figure, png_bytes, variant_colors

SWEEP_PNG = "sweep.png"
SWEEP_CSV = "sweep.csv"
SWEEP_MD = "sweep.md"


@dataclass
class Point:
    """One (batch size, variant): its cells' final test errors over the seeds that finished."""
    batch_size: int
    variant: str
    lr: float
    planned: int
    errors: list[float]
    seconds: list[float]
    statuses: list[str]

    @property
    def spread(self) -> Spread:
        return spread(self.errors)


def load_sweep(folder) -> dict:
    """A sweep folder's results (through load_run), x being the first swept option's value; a
    second swept option is folded into the variant's name ("gn:4 lr=0.1")."""
    results = load_run(folder).results
    if not results["config"]["axes"]:
        raise UserError(f"{folder} holds a comparison, not a sweep", "rebuild its report with normlab report")
    return results


def points(results: dict) -> list[Point]:
    cfg = results["config"]
    axis, *others = cfg["axes"]
    name = lambda c: c["variant"] + "".join(f" {k}={c['axes'][k]}" for k in others)
    variants = list(dict.fromkeys(name(c) for c in results["runs"]))
    sizes = sorted({c["axes"][axis] for c in results["runs"]} | set(cfg["axes"][axis]))
    out = []
    for b in sizes:
        for v in variants:
            cells = [c for c in results["runs"] if c["axes"][axis] == b and name(c) == v]
            if not cells:
                continue
            done = [c for c in cells if c.get("status") == "done" and "final" in c]
            out.append(Point(b, v, float(cells[0].get("lr", float("nan"))), len(cells),
                             [100.0 - float(c["final"]["test_acc"]) for c in done],
                             [float(c.get("seconds", 0.0)) for c in done], [str(c.get("status")) for c in cells]))
    return out


def sweep_csv(pts: list[Point]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["batch_size", "variant", "lr", "seeds_done", "seeds_planned", "test_err_mean", "test_err_std",
                     "test_err_ci95_low", "test_err_ci95_high", "test_err_min", "test_err_max", "seconds_mean"])
    num = lambda x, d=4: "" if x is None or x != x else f"{x:.{d}f}"
    for p in pts:
        s = p.spread
        writer.writerow([p.batch_size, p.variant, f"{p.lr:.6g}", s.n, p.planned, num(s.mean), num(s.std), num(s.low),
                         num(s.high), num(min(p.errors) if p.errors else None), num(max(p.errors) if p.errors else None),
                         num(sum(p.seconds) / len(p.seconds) if p.seconds else None, 2)])
    return buffer.getvalue()


def plot_sweep(results: dict):
    """The figure (a matplotlib Figure): test error against batch size, one line per variant."""
    pts = points(results)
    variants = list(dict.fromkeys(p.variant for p in pts))
    colors = variant_colors(variants)
    sizes = sorted({p.batch_size for p in pts})
    with rc_context(FONT):
        fig = new_figure(7.5, 5)
        ax = fig.subplots()
        for k, v in enumerate(variants):
            mine = [p for p in pts if p.variant == v and p.errors]
            if not mine:
                continue
            # Nudge each variant sideways (a few % on the log axis) so error bars at one batch size do not hide each other.
            dodge = 2 ** (0.06 * (k - (len(variants) - 1) / 2))
            x = [p.batch_size * dodge for p in mine]
            y = [p.spread.mean for p in mine]
            err = [p.spread.std or 0.0 for p in mine]
            seeds = sorted({p.spread.n for p in mine})
            label = v + (f" ({seeds[0]} seeds)" if len(seeds) == 1 and seeds[0] > 1 else
                         f" ({seeds[0]}-{seeds[-1]} seeds)" if len(seeds) > 1 else "")
            ax.errorbar(x, y, yerr=err, color=colors[v], marker="o", ms=5, lw=2, capsize=4, capthick=1.5, label=label)
        axis = next(iter(results["config"]["axes"]))
        if min(sizes) > 0 and axis in ("batch_size", "lr", "weight_decay"):
            ax.set_xscale("log", base=2 if axis == "batch_size" else 10)
        ax.set_xticks(sizes, [f"{b:g}" for b in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size (images per step)" if axis == "batch_size" else axis)
        ax.set_ylabel("test error (%)")
        cfg = results["config"]
        fig.suptitle(f"{title_of(results)}: test error vs {axis.replace('_', ' ')}")
        ax.set_title(f"{plural(cfg.get('epochs'), 'epoch')} per cell; {cfg.get('lr_rule', '')}", fontsize=9, color="#444")
        ax.grid(True, alpha=0.3)
        ax.legend(title="mean ± std over seeds")
    return fig


def plural(n, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def title_of(results: dict) -> str:
    from ..data import dataset_info
    try:
        return dataset_info(results["dataset"]).title
    except UserError:
        return str(results["dataset"])


def batch_tests(pts: list[Point]) -> dict[int, list[PairTest]]:
    """At each batch size, every pair of variants (Holm's correction within that batch size)."""
    return {b: compare_pairs({p.variant: p.errors for p in pts if p.batch_size == b and p.errors})
            for b in sorted({p.batch_size for p in pts})}


def degradation_tests(pts: list[Point]) -> list[PairTest]:
    """Per variant, its error at the smallest batch size against the largest (Holm over variants)."""
    sizes = sorted({p.batch_size for p in pts})
    if len(sizes) < 2:
        return []
    tests = []
    for v in dict.fromkeys(p.variant for p in pts):
        small = next((p for p in pts if p.variant == v and p.batch_size == sizes[0]), None)
        large = next((p for p in pts if p.variant == v and p.batch_size == sizes[-1]), None)
        if small and large and small.errors and large.errors:
            (t,) = compare_pairs({f"{v} at batch {sizes[0]}": small.errors, f"{v} at batch {sizes[-1]}": large.errors})
            tests.append(t)
    tested = [t for t in tests if t.tested]
    for t, adjusted in zip(tested, holm([t.p for t in tested])):
        t.p_holm, t.family = adjusted, len(tested)
    return tests


def cell_text(p: Point) -> str:
    s = p.spread
    if not s.n:
        return "-"
    text = f"{s.mean:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else "")
    if s.n < p.planned:
        text += f" ({s.n} of {p.planned})"
    return text


def sweep_markdown(results: dict, figure: str | None = SWEEP_PNG) -> str:
    cfg = results["config"]
    pts = points(results)
    variants = list(dict.fromkeys(p.variant for p in pts))
    sizes = sorted({p.batch_size for p in pts})
    at = {(p.batch_size, p.variant): p for p in pts}
    cells = results["runs"]
    done = sum(c.get("status") == "done" for c in cells)
    lines = [f"# normlab sweep: {title_of(results)}, {', '.join(variants)} at batch sizes {', '.join(map(str, sizes))}", ""]
    ex = results.get("executor", {})
    where = ex.get("executor", "?") + (f", {ex['workers']} workers" if ex.get("workers", 1) > 1 else "")
    if ex.get("executor") == "ray":
        where += f", {ex.get('cluster_cpus', '?'):g} CPUs / {ex.get('cluster_gpus', 0):g} GPUs in the cluster" \
            if isinstance(ex.get("cluster_cpus"), (int, float)) else ""
    lines += [f"{cfg.get('train_size', '?'):,} training and {cfg.get('test_size', '?'):,} test images; "
              f"{plural(cfg.get('epochs'), 'epoch')} per cell; {cfg.get('optimizer')} ({cfg.get('schedule')} schedule, weight decay "
              f"{cfg.get('weight_decay')}); {cfg.get('lr_rule')}; seeds {cfg.get('seed')}-"
              f"{cfg.get('seed', 1) + cfg.get('seeds', 1) - 1}; {done} of {len(cells)} cells finished; executor {where}; "
              f"driver {results.get('device_name', '?')}, torch {results.get('torch', '?')}"
              + (f"; {results['seconds']:.0f} s wall time." if isinstance(results.get("seconds"), (int, float)) else "."), ""]
    if figure:
        lines += [f"![test error against batch size]({figure})", ""]
    lines += ["## Test error (%) after the last epoch", "",
              "| batch size | peak lr | " + " | ".join(f"`{v}`" for v in variants) + " |",
              "| ---: | ---: | " + " | ".join("---:" for _ in variants) + " |"]
    for b in sizes:
        lr = next((at[(b, v)].lr for v in variants if (b, v) in at), float("nan"))
        lines.append(f"| {b} | {lr:.4g} | " + " | ".join(cell_text(at[(b, v)]) if (b, v) in at else "-" for v in variants) + " |")
    lines += ["", "Mean ± sample standard deviation of the final test error over the seeds that finished "
              "(\"2 of 3\": a seed has not finished or diverged). `sweep.csv` has the same numbers with the 95% "
              "t-interval of each mean, the min and max, and the seconds per cell.", ""]
    bad = [c for c in cells if str(c.get("status", "")).startswith("diverged")]
    if bad:
        lines += ["Diverged: " + "; ".join(f"{c['key']} `{c['variant']}` seed {c['seed']} ({c['status']})"
                                          for c in bad) + ".", ""]

    lines += ["## Does the error grow as the batch shrinks?", ""]
    degradation = degradation_tests(pts)
    for t in degradation:
        lines += [f"- {t.sentence(unit='points of error', higher='higher')}", ""]
    if not degradation:
        lines += ["Needs at least two batch sizes with finished cells.", ""]

    fewest = min((p.spread.n for p in pts if p.errors), default=0)
    lines += ["## Which norm is better at each batch size?", "",
              "Welch's t-test on the final test error of each pair of variants at one batch size, Holm's correction "
              "over the pairs at that batch size; a lower error is better, so the first of each pair is the worse. "
              "The bootstrap interval resamples each variant's seeds; with 2-3 seeds it is rough and too narrow, so "
              "it shows the size of a gap, not the verdict."
              + (f" With {fewest} seeds per cell the t-test has about {fewest - 1}-{2 * fewest - 2} degrees of "
                 f"freedom and calls only gaps many times the seed-to-seed spread significant; `--seeds 5` "
                 f"or more tells smaller gaps apart." if 0 < fewest < 4 else ""), "",
              "| batch size | pair (higher error first) | difference (points) | bootstrap 95% interval | Welch p | Holm p | at 5% |",
              "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for b, tests in batch_tests(pts).items():
        for t in tests:
            tested = t.tested
            lines.append(f"| {b} | `{t.a}` vs `{t.b}` | {t.difference:+.2f} | "
                         f"{f'{t.low:+.2f} to {t.high:+.2f}' if tested else '-'} | {fmt_p(t.p) if tested else '-'} | "
                         f"{fmt_p(t.p_holm) if tested else '-'} | {t.verdict} |")
    lines.append("")
    untested = {t.why_not for tests in batch_tests(pts).values() for t in tests if not t.tested}
    for why in sorted(untested):
        lines += [f"Not tested: {why}.", ""]
    return "\n".join(lines)


def write_sweep_report(folder) -> list[Path]:
    """sweep.png, sweep.csv and sweep.md from the folder's results.json."""
    folder = Path(folder)
    results = load_sweep(folder)
    write_bytes(folder / SWEEP_PNG, png_bytes(plot_sweep(results)))
    write_text(folder / SWEEP_CSV, sweep_csv(points(results)))
    write_text(folder / SWEEP_MD, sweep_markdown(results))
    return [folder / SWEEP_PNG, folder / SWEEP_CSV, folder / SWEEP_MD]
