"""The evidence of a run: curves, 5x2 grids, summary.txt, report.md and a self-contained report.html.

One short real training on generated data (2 variants x 2 seeds) builds the run folder the
tests read; `normlab compare` writes the report at its end, and `normlab report` must rebuild
the same files from the folder alone. That the indices in misclassified.json are really
misclassified by the checkpoints is tested in test_cli.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import torch

from conftest import make_idx_dataset, run_cli
from normlab import load_run, plot_curves, plot_misclassified
from normlab.report.aggregate import VariantRuns
from normlab.report.findings import findings
from normlab.errors import UserError
from normlab.report.style import png_bytes, variant_colors

VARIANTS = ["bn", "gn:2"]
REPORT_FIGURES = ["curves.png", "misclassified-bn.png", "misclassified-gn2.png"]     # embedded in report.html
FIGURES = REPORT_FIGURES + ["explain.png"]                                          # explain.png: in explain.html
REPORT_FILES = FIGURES + ["summary.txt", "report.md", "report.html", "explain.md", "explain.html"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data folder): 2 epochs of bn and gn:2 with seeds 1 and 2, batch 32."""
    root = tmp_path_factory.mktemp("report")
    data = make_idx_dataset(root / "data", n_train=512, n_test=256, wrong_test_labels=8)
    out = root / "run"
    code = run_cli("compare", "--norms", ",".join(VARIANTS), "--epochs", "2", "--seeds", "2", "--batch-size", "32",
                   "--data-dir", data, "--out", out)
    assert code == 0
    return out, data


@pytest.fixture
def run(trained):
    return load_run(trained[0])


def png(path_or_bytes) -> np.ndarray:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return matplotlib.image.imread(source, format="png")


def test_compare_writes_every_figure_and_the_report(trained):
    out, _ = trained
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in FIGURES:
        assert png(out / name).ndim == 3
    summary = (out / "summary.txt").read_text()
    assert "BatchNorm2d" in summary and "GroupNorm" in summary and "19,378" in summary and "share" in summary
    md = (out / "report.md").read_text()
    for name in REPORT_FIGURES:
        assert f"{name}" in md
    assert "`bn`" in md and "`gn:2`" in md and "[explain.md](explain.md)" in md
    assert "onecycle schedule, momentum 0.9 cycled 0.95 -> 0.85 -> 0.95 against the lr, trust ratio 0.1, weight decay" in md
    assert "; each training image shifted by up to 1 pixel;" in md          # 28x28: the dataset's rule, no flips
    assert "![" in (out / "explain.md").read_text() and "explain.png" in (out / "explain.md").read_text()
    assert "Total mult-adds (M)" in summary and "Units." not in summary and "[1, 10]" in summary


def assert_tiles_show(png_data: bytes, boxes, images: list[np.ndarray]) -> None:
    """In the PNG, every source pixel of each tile shows its stored value all over its square:
    real colours (no normalization left in), the right image, and no blur (sampled off-centre
    too, where an interpolating resize would mix in the neighbours)."""
    picture = png(png_data)
    height = picture.shape[0]
    for box, image in zip(boxes, images):
        n = image.shape[1]
        expected = np.moveaxis(image, 0, -1) / 255.0          # H x W x C; grey broadcasts to RGB
        for offset, inner in ((0.5, slice(None)), (0.25, slice(1, -1)), (0.75, slice(1, -1))):
            # (off-centre only inside the border, which the coloured frame overlaps)
            xs = box.x0 + (np.arange(n) + offset) * box.width / n
            ys = box.y1 - (np.arange(n) + offset) * box.height / n
            # Display y grows upwards from the bottom edge; PNG rows grow downwards from the top.
            rows, cols = np.floor(height - ys).astype(int), np.floor(xs).astype(int)
            shown = picture[rows[:, None], cols[None, :], :3]
            bad = np.argwhere(np.abs(shown - expected)[inner, inner].max(-1) > 2 / 255)
            assert not len(bad), (offset, bad[:5], len(bad))


def test_grid_is_5_rows_by_2_columns_of_the_misclassified_images(run, trained):
    test = run.test_set(trained[1])
    for variant in VARIANTS:
        mistakes = run.misclassified[variant]
        assert len(mistakes) == 10, "the generated data leaves more than 10 mistakes after 2 epochs"
        fig = plot_misclassified(run, variant, test)
        tiles = [ax for ax in fig.axes if ax.images]
        assert len(tiles) == 10 and len(fig.axes) == 10
        assert {ax.get_subplotspec().get_geometry()[:2] for ax in tiles} == {(5, 2)}
        data = png_bytes(fig)                       # also draws the figure, fixing the axes' places
        boxes = [ax.get_window_extent() for ax in tiles]
        assert len({round(b.x0) for b in boxes}) == 2 and len({round(b.y0) for b in boxes}) == 5
        title = fig._suptitle.get_text()
        assert variant in title and "Fashion-MNIST" in title and "most confidently wrong" in title
        for ax, m in zip(tiles, mistakes):
            classes = test.classes
            assert ax.get_title().startswith(f"pred: {classes[m['pred']]} / true: {classes[m['true']]}")
            assert f"{100 * m['confidence']:.1f}%" in ax.get_title()
            assert ax.images[0].get_interpolation() == "nearest"
        assert_tiles_show(data, boxes, [test.images[m["index"]].numpy() for m in mistakes])
        # The file the run wrote is this figure's size (5x2 tiles, taller than wide).
        written = png(run.folder / f"misclassified-{variant.replace(':', '')}.png")
        assert written.shape == png(data).shape and written.shape[0] > written.shape[1]


def test_cifar_grid_shows_the_images_in_their_colours(tmp_path):
    """RGB tiles from the CIFAR format: read by index from the test set, channels in order."""
    from conftest import make_cifar_dataset
    from normlab import load_dataset
    data = make_cifar_dataset(tmp_path / "cifar", per_batch=16, n_test=40)
    test = load_dataset("cifar10", "test", data)
    rng = np.random.default_rng(1)
    # Give the tiles distinct colours, so a swapped channel or image cannot pass.
    index = [int(i) for i in rng.choice(len(test), size=10, replace=False)]
    mistakes = [{"index": i, "true": int(test.labels[i]), "pred": (int(test.labels[i]) + 1) % 10, "confidence": 0.9 - k / 100}
                for k, i in enumerate(index)]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "normlab": "0.1.0", "schema": 2, "dataset": "cifar10",
        "config": {"epochs": 1, "seeds": 1, "variants": ["gn:4"], "axes": {}, "data_dir": str(data)},
        "runs": [record("gn:4", 1, [50.0])]}))
    (folder / "misclassified.json").write_text(json.dumps({"gn:4": mistakes}))
    run = load_run(folder)
    fig = plot_misclassified(run, "gn:4")
    data_png = png_bytes(fig)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == 10 and all(ax.images[0].get_array().shape == (32, 32, 3) for ax in tiles)
    images = [test.images[i].numpy() for i in index]
    assert len({im.tobytes() for im in images}) == 10
    assert_tiles_show(data_png, [ax.get_window_extent() for ax in tiles], images)
    assert "pred: " in tiles[0].get_title() and "CIFAR-10" in fig._suptitle.get_text()


def test_one_colour_per_variant_in_every_figure(run, trained):
    colors = variant_colors(VARIANTS)
    assert len(set(colors.values())) == len(VARIANTS)
    fig = plot_curves(run)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["BatchNorm (bn), 2 seeds", "GroupNorm, 2 groups (gn:2), 2 seeds"]
    for handle, variant in zip(legend.legend_handles, VARIANTS):
        assert handle.get_color() == colors[variant]
    assert "min–max" in fig._suptitle.get_text()
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if len(line.get_xdata())]
        assert [line.get_color() for line in lines] == [colors[v] for v in VARIANTS]
        assert len(ax.collections) == len(VARIANTS)          # one min-max band each
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    grid = plot_misclassified(run, "gn:2", run.test_set(trained[1]))
    spine = next(iter(grid.axes[0].spines.values()))
    assert matplotlib.colors.to_hex(spine.get_edgecolor()) == colors["gn:2"].lower()


def test_html_report_is_self_contained(trained):
    out, _ = trained
    text = (out / "report.html").read_text()

    class Refs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.refs, self.images = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            for name, value in attrs:
                if name in ("src", "href", "srcset", "poster", "data", "action", "background", "xlink:href"):
                    self.refs.append((tag, name, value or ""))
            if tag == "img":
                self.images.append(dict(attrs)["src"])

    parser = Refs()
    parser.feed(text)
    assert not {"link", "script", "iframe", "object", "embed", "base"} & set(parser.tags)
    # Only embedded data, the page's own anchors, and the explanation page normlab wrote beside it.
    assert all(value.startswith(("data:", "#")) or value == "explain.html" for _, _, value in parser.refs), parser.refs
    assert ("a", "href", "explain.html") in parser.refs and ("a", "href", "#results") in parser.refs
    # Nothing in the styles fetches anything either (a cited address in the text is no reference).
    css = "".join(re.findall(r"<style>(.*?)</style>", text, re.S))
    assert css and "@import" not in css and "url(" not in css and "://" not in css
    assert 'style="' not in text
    # Every figure is embedded, byte for byte.
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in parser.images]
    assert sorted(embedded) == sorted((out / name).read_bytes() for name in REPORT_FIGURES)
    explain = (out / "explain.html").read_text()
    assert explain.count("data:image/png;base64,") == 1 and 'src="explain.png"' not in explain


def test_report_command_rebuilds_deleted_files(trained, tmp_path, capsys):
    out, data = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in REPORT_FILES + ["misclassified.json"]:
        (copy / name).unlink()
    kept = {p: p.read_bytes() for p in [copy / "results.json", *sorted((copy / "checkpoints").iterdir())]}
    assert run_cli("report", copy, "--data-dir", data) == 0
    printed = capsys.readouterr().out.split()
    for name in REPORT_FILES:
        assert (copy / name).is_file(), name
        assert str(copy / name) in printed
    # Recomputed from the checkpoints exactly as the training run chose them.
    assert json.loads((copy / "misclassified.json").read_text()) == json.loads((out / "misclassified.json").read_text())
    assert (copy / "report.md").read_text() == (out / "report.md").read_text()
    assert (copy / "summary.txt").read_text() == (out / "summary.txt").read_text()
    assert {p: p.read_bytes() for p in kept} == kept, "report trains nothing and never changes results or checkpoints"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def damage_a_weight(folder: Path) -> None:
    """A checkpoint that loads but whose weights overflow every logit (one kernel x 1e30): the
    report recomputing misclassified.json from it must refuse, not write NaN confidences."""
    import torch
    (folder / "misclassified.json").unlink()
    path = folder / "checkpoints" / "gn2-seed1.pt"
    state = torch.load(path, weights_only=True)
    name = next(k for k in state["model"] if k.endswith("conv.weight"))
    for weights in (state["model"], state.get("chosen", {}).get("model", {})):
        if name in weights:
            weights[name] *= 1e30
    torch.save(state, path)


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "results.json").unlink(), "holds no normlab run"),
    (lambda d: (d / "results.json").write_text("{not json"), "is not valid JSON"),
    (lambda d: (d / "results.json").write_text('{"runs": []}'), "is not a normlab results file"),
    (lambda d: (d / "results.json").write_text(json.dumps({
        "schema": 2, "dataset": "fashion-mnist", "config": {"axes": {}, "variants": ["bn"]},
        "runs": [{"key": "bn-seed1", "variant": "bn", "seed": 1, "axes": {}, "status": "done", "epochs": [{"epoch": 1}],
                  "final": {}, "seconds": 1.0, "params": 100}]})),
     "has an epoch without its losses"),
    (lambda d: edit_json(d / "results.json", lambda r: r["config"].update(batch_size=[1, 2])), "config batch_size is [1, 2], not int"),
    (lambda d: edit_json(d / "results.json", lambda r: r["config"].update(lr=-1)), "config: --lr -1 must be a positive number"),
    (lambda d: edit_json(d / "results.json", lambda r: r["config"].pop("batch_size") and r["config"].update(weight_decay="x")),
     "config weight_decay is 'x', not float"),
    (lambda d: edit_json(d / "results.json", lambda r: r["config"]["variants"].append("")), "config.variants: cannot read variant ''"),
    (lambda d: edit_json(d / "results.json", lambda r: r["runs"][0].update(params=0)), "runs[0] has no valid 'params'"),
    (lambda d: edit_json(d / "results.json", lambda r: r["runs"][0].pop("seconds")), "runs[0] has no valid 'seconds'"),
    (lambda d: edit_json(d / "results.json", lambda r: r["config"].update(momentum_used={"a": 1})), "config.momentum_used is not text"),
    (lambda d: edit_json(d / "results.json", lambda r: r.update(lr_search={"grid": []})), "lr_search is not a table"),
    (lambda d: edit_json(d / "results.json", lambda r: r["runs"][0].update(axes={"batch_size": 2})
                         or r["config"].update(axes={"batch_size": [2, [3]]}) or r["runs"][1].update(axes={"batch_size": [3]})),
     "runs[1] (gn:2): config batch_size is [3], not int"),
    (damage_a_weight, "gives non-finite outputs on the test set"),
])
def test_report_of_a_broken_folder_is_one_line_and_exit_2(trained, tmp_path, capsys, damage, words):
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    damage(copy)
    before = snapshot(copy)
    code = run_cli("report", copy, "--data-dir", trained[1])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and "\n" not in err and "Traceback" not in err, err
    assert snapshot(copy) == before


def test_report_redraws_the_explain_figure_of_an_older_folder(trained, tmp_path):
    """The mark that lets `explain --figure` draw over a file is for paths outside run folders:
    a run folder's figure is normlab's by its manifest, drawn with or without the mark."""
    import matplotlib.pyplot as plt
    from normlab.explain.figure import drawn_by_normlab
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    plt.figure().savefig(copy / "explain.png")                # as normlab before the mark drew it
    plt.close("all")
    assert run_cli("report", copy, "--data-dir", trained[1]) == 0
    assert drawn_by_normlab(copy / "explain.png")


def test_the_saved_model_is_the_one_validation_chose(trained):
    """Each checkpoint keeps the chosen epoch's weights: Run.predict (and so the grids) gives the
    accuracy results.json reports at that epoch, not the last epoch's."""
    import torch
    run = load_run(trained[0])
    test = run.test_set(trained[1])
    differ = 0
    for record in run.runs:
        saved = torch.load(trained[0] / "checkpoints" / f"{record['key']}.pt", weights_only=True)
        assert saved["chosen"]["epoch"] == record["final"]["best_val_epoch"]
        pred, _ = run.predict(record["variant"], test.images, record["seed"])
        accuracy = 100.0 * (pred == test.labels).double().mean().item()
        assert accuracy == pytest.approx(record["final"]["test_acc_at_best_val"], abs=1e-3)
        differ += record["final"]["test_acc_at_best_val"] != record["epochs"][-1]["test_acc"]
    print(f"{differ} of {len(run.runs)} runs chose an epoch whose test accuracy differs from the last's")


def test_a_folder_where_the_report_goes_is_named_and_kept(trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    (copy / "report.html").unlink()
    (copy / "report.html").mkdir()
    (copy / "report.html" / "mine.txt").write_text("mine")
    code = run_cli("report", copy, "--data-dir", trained[1])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot write" in err and "report.html" in err and "\n" not in err, err
    assert "move that folder away" in err and "disk space" not in err, "a folder in the way is not a full disk"
    assert (copy / "report.html" / "mine.txt").read_text() == "mine"


def test_report_refuses_another_test_set(trained, tmp_path, capsys):
    """Images read by index from a test set that is not the run's would be wrong images under
    the run's labels: refused (before anything is written) rather than drawn."""
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    other = make_idx_dataset(tmp_path / "other", n_train=64, n_test=256, seed=7)
    before = snapshot(copy)
    code = run_cli("report", copy, "--data-dir", other)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not the one" in err and "--data-dir" in err and "\n" not in err, err
    assert snapshot(copy) == before


def test_report_of_a_missing_folder(tmp_path, capsys):
    assert run_cli("report", tmp_path / "nowhere") == 2
    assert "holds no normlab run" in capsys.readouterr().err


def epoch(n, acc, loss=1.0):
    return {"epoch": n, "train_loss": loss, "train_acc": acc - 1, "test_loss": loss, "test_acc": acc, "seconds": 1.0}


def record(variant, seed, accs, status="done"):
    epochs = [epoch(i + 1, a) for i, a in enumerate(accs)]
    entry = {"key": f"{variant.replace(':', '')}-seed{seed}", "variant": variant, "seed": seed, "axes": {}, "params": 14658, "status": status, "seconds": float(len(accs)), "epochs": epochs}
    if epochs:
        entry["final"] = {"test_acc": accs[-1], "test_loss": 1.0, "train_acc": accs[-1] - 1, "train_loss": 1.0,
                          "best_test_acc": max(accs)}
    return entry


def test_unfinished_and_diverged_runs_are_drawn_and_reported(tmp_path, trained):
    """A run in progress (and one that diverged) still gets curves and a report; no grid for them."""
    results = {"normlab": "0.1.0", "schema": 2, "dataset": "fashion-mnist",
               "config": {"epochs": 5, "batch_size": 32, "seeds": 1, "seed": 1, "variants": ["bn", "ln", "gn:4", "in"], "axes": {}},
               "runs": [record("bn", 1, [80, 85, 88, 89, 90]), record("ln", 1, [70, 60], "diverged at epoch 3"),
                        record("gn:4", 1, [75, 80], "running"), record("in", 1, [], "pending")]}
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    assert run_cli("report", folder) == 0          # nothing to draw from the test set: data not needed
    run = load_run(folder)
    labels = [t.get_text() for t in plot_curves(run).legends[0].get_texts()]
    assert labels == ["BatchNorm (bn)", "LayerNorm (ln): diverged at epoch 3", "GroupNorm, 4 groups (gn:4): running, 2/5 epochs",
                      "InstanceNorm (in): pending, 0/5 epochs"]
    md = (folder / "report.md").read_text()
    assert "incomplete" in md and "1 of 4 runs finished" in md and "diverged at epoch 3" in md
    assert "No grid for `ln`, `gn:4`, `in`: their runs did not finish" in md
    assert "No grid for `bn`: no misclassified images saved and no checkpoint" in md
    assert not list(folder.glob("misclassified-*.png")) and (folder / "curves.png").is_file()


def group(variant, accs):
    return VariantRuns(variant, [record(variant, seed, [a]) for seed, a in enumerate(accs, 1)])


def test_findings_with_one_seed_claim_no_winner():
    text = " ".join(findings([group("bn", [92.5]), group("gn:4", [92.1])]))
    assert "`bn` has the highest final test accuracy, 92.50%, 0.40 points ahead of `gn:4`" in text
    assert "noise is unknown" in text and "does not show a winner" in text and "--seeds 3" in text
    assert "larger than the run-to-run noise" not in text


def test_findings_with_separated_seeds_say_the_margin_is_significant():
    text = " ".join(findings([group("gn:4", [91.0, 91.2, 91.1]), group("bn", [92.0, 92.3, 92.1])]))
    assert "`bn` has the highest mean final test accuracy, 92.13%, 1.03 points ahead of `gn:4`" in text
    assert "The margin is significant at the 5% level (Welch's t-test p = " in text
    assert "larger than the run-to-run noise explains" in text and "not significant" not in text


def test_findings_with_overlapping_seeds_claim_no_winner():
    text = " ".join(findings([group("bn", [92.0, 91.0, 92.6]), group("gn:4", [91.9, 91.5, 92.2])]))
    assert "`bn` has the highest mean" in text and "not significant at the 5% level" in text
    assert "within the run-to-run noise, so no winner is claimed" in text


def test_findings_use_holm_corrected_p_over_every_pair():
    groups = [group("bn", [92.0, 92.4, 92.2]), group("gn:4", [91.2, 91.6, 91.1]), group("ln", [90.0, 90.3, 90.1])]
    text = " ".join(findings(groups))
    assert "after Holm's correction for 3 pairs" in text


def test_findings_with_identical_seeds_do_not_test():
    text = " ".join(findings([group("bn", [92.0, 92.0]), group("gn:4", [91.0, 91.0])]))
    assert "The margin is not tested: every seed of each gave exactly the same value" in text
    assert "No winner is claimed" in text and "significant" not in text


def test_report_table_shows_mean_and_std_across_seeds(trained):
    md = (trained[0] / "report.md").read_text()
    run = load_run(trained[0])
    accs = [r["final"]["test_acc"] for r in run.runs if r["variant"] == "bn"]
    mean, std = np.mean(accs), np.std(accs, ddof=1)
    # From 2 seeds the 95% t-interval is mean ± 12.7 standard errors: not shown, and the note says why.
    assert f"| `bn` | 2 | {mean:.2f} ± {std:.2f} | - |" in md
    assert "mean ± sample standard deviation" in md and "shown from 3 seeds: from 2 it is the mean ± 12.7" in md


def test_report_has_the_pairwise_significance_table(trained):
    md = (trained[0] / "report.md").read_text()
    html = (trained[0] / "report.html").read_text()
    assert "## Are the differences real?" in md and '<h2 id="are-the-differences-real">Are the differences real?</h2>' in html
    run = load_run(trained[0])
    acc = {v: [r["final"]["test_acc"] for r in run.runs if r["variant"] == v] for v in VARIANTS}
    high, low = sorted(VARIANTS, key=lambda v: -np.mean(acc[v]))
    row = next(line for line in md.splitlines() if line.startswith(f"| `{high}` vs `{low}` | 2, 2 |"))
    assert f"| {np.mean(acc[high]) - np.mean(acc[low]):+.2f} |" in row
    assert re.search(r"\| (not tested|(not )?significant at 5% \(Welch's t-test p = [^|]*\)) \|$", row), row


def test_notebook_runs_end_to_end(trained, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = Path(__file__).parent.parent / "examples" / "compare.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    import normlab
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    used = set(re.findall(r"\bnormlab\.(\w+)", code)) | {n.strip() for names in re.findall(r"from normlab import ([\w, ]+)", code)
                                                         for n in names.split(",")}
    assert used and used <= set(normlab.__all__), used - set(normlab.__all__)
    assert "from normlab." not in code and "import normlab." not in code, "the notebook uses only the public API"
    saved = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in saved), "the notebook is committed with its outputs"
    out = tmp_path / "nb-run"
    for name, value in {"DATA_DIR": trained[1], "OUT": out, "EPOCHS": 1, "BATCH_SIZE": 32, "NORMS": "bn,gn:2",
                        "TRAIN_LIMIT": 0, "TEST_LIMIT": 0}.items():
        monkeypatch.setenv(f"NORMLAB_NB_{name}", str(value))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 1 + 2, "curves and one grid per variant"
    text = "".join(o.get("text", "") for o in outputs)
    assert "misclassified.json re-checked: True" in text and "noise is unknown" in text
    assert (out / "report.html").is_file() and load_run(out).variants == ["bn", "gn:2"]


def test_report_renders_in_chromium(trained, tmp_path):
    scripts = Path(__file__).parent.parent / "scripts"
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_report", scripts / "render_report.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    if render.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the HTML was checked statically only")
    shot = tmp_path / "page.png"
    record = render.check_page(trained[0] / "report.html", screenshot=shot)
    assert record["ok"], record["broken"]
    assert len(record["images"]) == len(REPORT_FIGURES)
    assert all(i["naturalWidth"] > 300 and i["shownWidth"] > 300 for i in record["images"])
    assert png(shot).shape[0] > 1000


def test_report_help(capsys):
    assert run_cli("report", "--help") == 0
    out = capsys.readouterr().out
    assert "RUN_DIR" in out and "--data-dir" in out and "Trains nothing" in out


def test_one_document_model_renders_markdown_and_self_contained_html(tmp_path):
    """Blocks to Markdown and to HTML: a table of contents with working anchors, a generated
    Markdown fragment (rendered by markdown-it-py, its image embedded), a link to a sibling page
    (to its .html twin), and a cited address that stays text."""
    from normlab.report.page import Code, Heading, Image, Markdown, Page, Paragraph, Section, Table, Toc, to_html, to_markdown
    (tmp_path / "explain.png").write_bytes(png_bytes(plot_figure_stub()))
    fragment = "### BatchNorm (`bn`)\n\n| statistic | mean |\n|---|---:|\n| channel 0 | 6.25 |\n\n![cube](explain.png)\n"
    page = Page("t", [Section("Are the differences real?", [Paragraph("see [the explanation](explain.md); **which**, "
                                                                      "Wu and He, [GN](https://arxiv.org/abs/1803.08494)")]),
                      Section("Worked", [Heading("x"), Markdown(fragment), Table(["a", "b"], [["1", "2"]], {1}),
                                         Image("explain.png", "cube"), Code("x = [[1, 2]]")])], intro=[Toc()])
    md = to_markdown(page)
    assert "- [Are the differences real?](#are-the-differences-real)" in md and "| channel 0 | 6.25 |" in md
    assert "[the explanation](explain.md)" in md and "## Worked" in md and "```\nx = [[1, 2]]\n```" in md
    html = to_html(page, tmp_path)
    assert '<a href="#are-the-differences-real">' in html and '<h2 id="are-the-differences-real">' in html
    assert '<a href="explain.html">the explanation</a>' in html and "<strong>which</strong>" in html
    assert "GN (https://arxiv.org/abs/1803.08494)" in html and 'href="https' not in html
    assert "<h3>BatchNorm (<code>bn</code>)</h3>" in html and '<td class="num">6.25</td>' in html
    assert '<td class="num">2</td>' in html and "<pre>x = [[1, 2]]</pre>" in html
    assert html.count("data:image/png;base64,") == 2 and 'src="explain.png"' not in html and 'style="' not in html


def plot_figure_stub():
    from normlab.report.style import new_figure
    fig = new_figure(2, 1)
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def test_one_variant_short_of_seeds_is_named_not_every_variant():
    """'With one seed per variant' was said when bn had 3 seeds and only ln 1 (2 diverged)."""
    ln = VariantRuns("ln", [record("ln", 1, [89.0]), record("ln", 2, [50.0], "diverged at epoch 1"),
                            record("ln", 3, [50.0], "diverged at epoch 1")])
    text = " ".join(findings([group("bn", [90.0, 91.0, 92.0]), ln]))
    assert "`ln` has 1 finished seed (2 did not finish or diverged), too few to measure its run-to-run noise, " \
           "so this margin is not tested and no winner is claimed." in text
    assert "one seed per variant" not in text


def test_the_margin_quotes_the_spread_of_the_metric_it_tested():
    """Records without the at-best-validation accuracy make every variant compared on the final one;
    the margin sentence quoted the other metric's spread beside that p-value."""
    from normlab.report.aggregate import AT_BEST_VAL

    def runs(variant, final, best=None):
        out = []
        for seed, acc in enumerate(final, 1):
            r = record(variant, seed, [acc])
            if best is not None:
                r["final"][AT_BEST_VAL] = best[seed - 1]
            out.append(r)
        return VariantRuns(variant, out)
    groups = [runs("bn", [90.0, 91.0, 92.0], [90.0, 91.0, 92.0]), runs("ln", [80.0, 86.0, 89.0], [85.0, 86.0, 89.0]),
              runs("gn:4", [50.0, 51.0, 52.0])]                     # no AT_BEST_VAL: final accuracy for all
    text = " ".join(findings(groups))
    assert "4.58 over 3 of `ln`" in text and "2.08" not in text


def test_a_device_the_machine_lacks_is_named_not_blamed_on_the_checkpoint(trained):
    """load_model(device='cuda') on a CPU box said the checkpoint was damaged and to delete it."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out, _ = trained
    run = load_run(out)
    for device in ("cuda", "gpu"):
        with pytest.raises(UserError) as err:
            run.load_model("bn", device=device)
        assert "delete" not in str(err.value) and ("CUDA" in str(err.value) or "unknown device 'gpu'" in str(err.value))
    assert not run.load_model("bn", device="cpu").training
