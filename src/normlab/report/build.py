"""Every figure, summary.txt and the report of a run folder, from what the folder holds.

Reads results.json, misclassified.json, the checkpoints and the test set; never trains. The
end of `normlab compare`/`train` calls ``write_report``, and `normlab report RUN_DIR` calls it
again to rebuild everything from the folder alone.
"""

from __future__ import annotations

from pathlib import Path

from ..explain import draw_figure
from ..runs import MISCLASSIFIED, Run, limit, load_run, most_confident_mistakes
from ..storage import write_json, write_text
from ..variants import Variant
from .aggregate import group_runs
from .curves import write_curves
from .grids import write_grids
from .page import EXPLAIN_FIGURE, REPORT_HTML, REPORT_MD, SUMMARY, build_sections, page_title, to_html, to_markdown
from .style import run_variants
from .summary import summary_rows, summary_text


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
        mistakes[variant] = most_confident_mistakes(result.predictions, result.confidences, test.labels)
    write_json(run.folder / MISCLASSIFIED, mistakes)


def write_report(run_or_folder, data_dir=None, test=None) -> list[Path]:
    """Write curves.png, the grids, explain.png, summary.txt, report.md and report.html; return their paths.

    ``test``: the test set if already in memory; otherwise it is read from ``data_dir`` (or
    where the run found it) before anything is written, so a missing dataset changes nothing.
    """
    run = run_or_folder if isinstance(run_or_folder, Run) else load_run(run_or_folder)
    if test is None and (run.misclassified or missing_mistakes(run)):
        test = run.test_set(data_dir)
    if test is not None:
        fill_misclassified(run, test)
    variants = run_variants(run)
    groups = group_runs(run, variants)
    written = [write_curves(run)]
    grids = write_grids(run, test)
    written += list(grids.values())
    draw_figure(run.folder / EXPLAIN_FIGURE)
    written.append(run.folder / EXPLAIN_FIGURE)
    rows = summary_rows([Variant.parse(g.variant) for g in groups], run.dataset)
    summary = summary_text([Variant.parse(g.variant) for g in groups], run.dataset, rows)
    write_text(run.folder / SUMMARY, summary)
    written.append(run.folder / SUMMARY)
    sections = build_sections(run, groups, grids, summary, rows)
    title = page_title(run, groups)
    write_text(run.folder / REPORT_MD, to_markdown(title, sections))
    write_text(run.folder / REPORT_HTML, to_html(title, sections, run.folder))
    written += [run.folder / REPORT_MD, run.folder / REPORT_HTML]
    return written
