"""What the report says, from results.json files written here in the real schema (old and new):
grammar, intervals that stay inside 0-100, one verdict per comparison, val-chosen epochs, loss
spikes, fixed colours and spelled titles, and sweeps over any axes."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from normlab import load_run, plot_curves, plot_sweep
from normlab.report.style import variant_colors, variant_title
from normlab.report.sweep import load_sweep


def record(variant, seed, accs, losses=None, val=None, **axes):
    """One run of results.json; ``val``: validation accuracies (schema 2, as the fair branch writes it)."""
    losses = losses or [1.0] * len(accs)
    epochs = [{"epoch": i + 1, "train_loss": l, "train_acc": a - 1, "test_loss": l, "test_acc": a, "seconds": 1.0}
              for i, (a, l) in enumerate(zip(accs, losses))]
    final = {"test_acc": accs[-1], "test_loss": losses[-1], "train_acc": accs[-1] - 1, "train_loss": losses[-1]}
    if val:
        best = max(range(len(val)), key=val.__getitem__)
        for e, v in zip(epochs, val):
            e.update(val_acc=v, val_loss=1.0)
        final.update(best_val_epoch=best + 1, val_acc=val[best], test_acc_at_best_val=accs[best])
    else:
        final["best_test_acc"] = max(accs)
    key = re.sub(r"[^A-Za-z0-9._=-]", "_", "-".join([variant, f"seed{seed}", *(f"{k}{v}" for k, v in axes.items())]))
    return {"key": key, "variant": variant, "seed": seed, "params": 19378, "status": "done",
            "seconds": float(len(accs)), "epochs": epochs, "final": final, "axes": axes, "lr": axes.get("lr", 0.1)}


def write_run(folder, runs, epochs, seeds, **config):
    folder.mkdir()
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    cfg = {"epochs": epochs, "batch_size": 32, "seeds": seeds, "seed": 1, "variants": variants, "axes": {},
           "optimizer": "sgd", "schedule": "onecycle", "weight_decay": 5e-4, **config}
    (folder / "results.json").write_text(json.dumps({"normlab": "0.1.0", "schema": 2, "dataset": "fashion-mnist", "config": cfg,
                                                     "runs": runs}))
    return folder


def report(folder) -> str:
    assert run_cli("report", folder) == 0
    return (folder / "report.md").read_text()


def accuracy_intervals(text: str) -> list[tuple[float, float]]:
    """Every unsigned 'a to b' in the text (differences are printed signed, '+5.47 to +13.67')."""
    return [(float(a), float(b)) for a, b in re.findall(r"(?<![+\-\d.])(\d+\.\d+) to (\d+\.\d+)", text)]


def test_one_epoch_two_seed_report_reads_right(tmp_path):
    # bn's seeds agree, gn:2's differ widely: the bootstrap interval of the gap excludes 0
    # while Welch's t-test (2 seeds each) is far from significant -- the case that read as a contradiction.
    runs = [record("bn", 1, [7.03]), record("bn", 2, [7.03]), record("gn:2", 1, [20.7]), record("gn:2", 2, [12.5])]
    md = report(write_run(tmp_path / "run", runs, epochs=1, seeds=2))
    for wrong in ("1 epochs", "1 pairs", "1 seeds", "1 runs"):
        assert wrong not in md
    assert "1 epoch, batch 32" in md
    assert all(0 <= a <= b <= 100 for a, b in accuracy_intervals(md)), accuracy_intervals(md)
    # "not significant" never stands beside an interval that excludes 0 without the reason.
    for line in md.splitlines():
        for low, high in re.findall(r"([+-]\d+\.\d+) to ([+-]\d+\.\d+) points", line):
            if "not significant" in line and (float(low) > 0 or float(high) < 0):
                assert "the t-test decides" in line and "too narrow" in line, line
    assert md.count("not significant at 5% (Welch's t-test p = ") == 1        # one verdict, in the table
    assert "| `gn:2` | 2 | 16.60 ± 5.80 | - |" in md and "from 2 it is the mean ± 12.7" in md
    assert "- [Findings](#findings)" in md and "[explain.md](explain.md)" in md
    fig = plot_curves(load_run(tmp_path / "run"))
    ax = next(a for a in fig.axes if a.get_title() == "Test accuracy")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1"] and ax.get_xlim() == (0.5, 1.5)
    # The seed band at a single epoch is a bar from one seed to the other, not a zero-width fill.
    (bar,) = ax.collections[1].get_segments()
    assert sorted(bar[:, 1]) == [12.5, 20.7] and ax.collections[1].get_linewidth()[0] > 3


def test_intervals_near_100_stay_inside(tmp_path):
    runs = [record("bn", s, [a]) for s, a in enumerate([99.9, 98.0, 99.95], 1)] + \
           [record("gn:4", s, [a]) for s, a in enumerate([97.0, 99.5, 99.9], 1)]
    md = report(write_run(tmp_path / "run", runs, epochs=1, seeds=3))
    intervals = accuracy_intervals(md)
    assert intervals and all(0 <= a <= b <= 100 for a, b in intervals)
    assert any(b == 100.0 for _, b in intervals), "the raw t-interval of bn passes 100 and is clipped"


def test_validation_chosen_epochs_are_ranked_and_said(tmp_path):
    runs = [record("bn", 1, [80, 85, 84], val=[79, 86, 83]), record("ln", 1, [78, 82, 83], val=[77, 80, 82])]
    md = report(write_run(tmp_path / "run", runs, epochs=3, seeds=1, val=5000))
    assert ("test accuracy at the epoch chosen by validation accuracy on 5,000 held-out training images; the test "
            "set was never used to choose") in md
    assert "| `bn` | 1 | 85.00 | 2 | 84.00 |" in md and "best test" not in md     # one seed's epoch: a whole number
    assert "highest test accuracy at the best-validation epoch, 85.00%" in md
    assert "ran the same recipe" in md and "`--lr auto` searches one per variant" in md
    titles = [ax.get_title() for ax in plot_curves(load_run(tmp_path / "run")).axes]
    assert "Validation loss" in titles and "Validation accuracy" in titles
    two = [record("bn", 1, [80, 85, 84], val=[79, 86, 83]), record("bn", 2, [80, 84, 86], val=[79, 83, 85])]
    md = report(write_run(tmp_path / "two", two, epochs=3, seeds=2, val=5000))
    assert "| `bn` | 2 | 85.50 ± 0.71 | - | 2.5 ± 0.7 | 85.00 ± 1.41 |" in md   # several seeds: mean ± sd


def test_the_findings_test_the_numbers_the_table_tests(tmp_path):
    """The best-validation epoch's accuracy is the headline; a findings sentence that tested the
    last epoch's instead (as it once did) gave another p-value than the table beside it."""
    runs = [record("bn", s, [a, last], val=[90, 50]) for s, (a, last) in enumerate([(7, 12.5), (13, 10.5), (14.5, 10.5)], 1)]
    runs += [record("gn:4", s, [a, a], val=[90, 50]) for s, a in enumerate([17, 25.5, 28], 1)]
    md = report(write_run(tmp_path / "run", runs, epochs=2, seeds=3, val=100))
    p_values = set(re.findall(r"Welch's t-test p = ([0-9.]+)", md))
    assert p_values == {"0.0479"}, p_values              # scipy on [17, 25.5, 28] vs [7, 13, 14.5]; 0.0606 on the last epochs


def test_a_run_too_short_for_one_cycle_says_its_lr_was_constant(tmp_path):
    """train.make_schedule keeps the lr and momentum constant below 3 steps; the setup said one-cycle."""
    runs = [record("bn", 1, [50.0])]
    md = report(write_run(tmp_path / "short", runs, epochs=1, seeds=1, train_size=64, test_size=32,
                          momentum_used="momentum 0.9 cycled 0.95 -> 0.85 -> 0.95 against the lr"))
    assert "the lr held constant (one-cycle needs 3 steps; this run took 2 steps), momentum 0.9," in md
    assert "onecycle schedule" not in md and "cycled" not in md
    md = report(write_run(tmp_path / "long", runs, epochs=2, seeds=1, train_size=64, test_size=32))
    assert "onecycle schedule" in md


@pytest.mark.parametrize("executor, words", [({"executor": "local", "workers": 1}, "trained one after another on the same device"),
                                             ({"executor": "local", "workers": 2}, "trained side by side, sharing the machine")])
def test_the_wall_time_sentence_says_how_the_runs_shared_the_machine(tmp_path, executor, words):
    runs = [record("bn", 1, [50.0]), record("gn:4", 1, [40.0])]
    runs[1]["seconds"] = 3.0
    folder = write_run(tmp_path / "run", runs, epochs=1, seeds=1)
    results = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**results, "executor": executor}))
    assert f"ranged from 1.0 s (`bn`) to 3.0 s (`gn:4`), {words};" in report(folder)


def test_a_loss_spike_goes_on_a_log_axis(tmp_path):
    runs = [record("bn", 1, [80, 82, 84, 85], losses=[0.6, 77.0, 0.4, 0.35]), record("gn:4", 1, [80, 81, 83, 84])]
    fig = plot_curves(load_run(write_run(tmp_path / "run", runs, epochs=4, seeds=1)))
    loss_axes = [ax for ax in fig.axes if ax.get_title().endswith("loss")]
    assert loss_axes and all(ax.get_yscale() == "log" and "log" in ax.get_ylabel() for ax in loss_axes)
    assert all(ax.get_yscale() == "linear" for ax in fig.axes if "accuracy" in ax.get_title())


def test_colours_belong_to_names_and_titles_spell_the_norm():
    assert variant_colors(["gn:4", "bn"])["gn:4"] == variant_colors(["bn", "ln", "in", "gn:4"])["gn:4"]
    assert variant_colors(["ln", "bn"])["bn"] == variant_colors(["bn"])["bn"]
    mine = variant_colors(["gn:2", "gn:4", "my-norm", "bn+l1"])
    assert len(set(mine.values())) == 4 and variant_colors(["my-norm"])["my-norm"] == variant_colors(["my-norm"])["my-norm"]
    assert variant_title("ln") == "LayerNorm (ln)" and variant_title("gn:4") == "GroupNorm, 4 groups (gn:4)"
    assert variant_title("brn") == "Batch Renormalization (brn)" and variant_title("frn") == "Filter Response Norm (frn)"
    assert variant_title("bn+l1=1e-4") == "BatchNorm + L1 (bn+l1=1e-4)" and variant_title("mine:3") == "mine:3"


def test_sweep_over_two_axes_gets_panels_and_an_html_report(tmp_path):
    axes = {"lr": [0.01, 0.1], "batch_size": [8, 32]}
    runs = [record(v, s, [a - 10 * (lr == 0.01) + s], lr=lr, batch_size=b)
            for v, a in (("bn", 85.0), ("gn:4", 84.0)) for lr in axes["lr"] for b in axes["batch_size"] for s in (1, 2, 3)]
    folder = write_run(tmp_path / "sweep", runs, epochs=1, seeds=3, axes=axes, train_size=512, test_size=256)
    md = report(folder)
    for name in ("sweep.png", "sweep.csv", "report.md", "report.html"):
        assert (folder / name).is_file(), name
    assert "| lr | batch_size | `bn` | `gn:4` |" in md and "| 0.01 | 8 | 23.00 ± 1.00 | 24.00 ± 1.00 |" in md
    assert "## Does the error change along lr?" in md and "1 epoch per run" in md
    assert "| `bn at lr 0.01, batch_size 8` vs `bn at lr 0.1, batch_size 8` | +10.00 |" in md
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and '<a href="#setup">' in html
    fig = plot_sweep(load_sweep(folder))
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert [ax.get_title() for ax in panels] == ["batch_size = 8", "batch_size = 32"]
    assert all(ax.get_xscale() == "log" for ax in panels)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["BatchNorm (bn), 3 seeds",
                                                                         "GroupNorm, 4 groups (gn:4), 3 seeds"]
    rows = (folder / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("lr,batch_size,variant,seeds_done") and len(rows) == 1 + 8
    render = render_script()
    if render.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the HTML was checked statically only")
    shown = render.check_page(folder / "report.html")
    assert shown["ok"], shown["broken"]
    assert len(shown["images"]) == 1 and shown["images"][0]["naturalWidth"] > 1000


def test_a_sweep_with_an_lr_per_variant_shows_each(tmp_path):
    """--lr auto in a batch-size sweep: bn and ln train at their own peak lr; the column showed bn's alone."""
    runs = [record(v, s, [80, 81], val=[80, 81], batch_size=b) for v in ("bn", "ln") for b in (32, 64) for s in (1, 2)]
    for r in runs:
        r["lr"] = {"bn": 0.2, "ln": 0.05}[r["variant"]] * (r["axes"]["batch_size"] / 128) ** 0.5
    md = report(write_run(tmp_path / "sweep", runs, epochs=2, seeds=2, axes={"batch_size": [32, 64]}, val=100,
                           train_size=512, test_size=256))
    assert "| 32 | bn 0.1, ln 0.025 |" in md and "| 64 | bn 0.1414, ln 0.03536 |" in md


def test_a_sweep_over_epochs_judges_convergence_by_the_next_budget(tmp_path):
    # 4, 8 and 16 epochs swept (config.epochs keeps the default 20). Best validation accuracy:
    # 75 at 4 epochs, 85 at 8, 85.5 and 85.3 at 16 (mean 85.4): 4 -> 8 gains 10 points (4 is not on its
    # plateau), 8 -> 16 gains 0.4 (both on it). Each 8-epoch run is flat over its last quarter and
    # each 16-epoch run is still rising in it, which the per-run rule would have called the other way.
    curves = {4: ([50, 60, 70, 75],), 8: ([50, 60, 70, 80, 84, 85, 85, 85],),
              16: ([50 + i for i in range(14)] + [70, 85.5], [50 + i for i in range(14)] + [70, 85.3])}
    axes = {"epochs": [4, 8, 16], "batch_size": [8]}          # as `--over epochs=... --batch-sizes 8` orders them
    runs = [record("bn", s, [a - 1 for a in val], val=val, epochs=e, batch_size=8)
            for e, vals in curves.items() for s in (1, 2) for val in [vals[min(s - 1, len(vals) - 1)]]]
    folder = write_run(tmp_path / "sweep", runs, epochs=20, seeds=2, axes=axes, train_size=512, test_size=256)
    md = report(folder)
    assert "Judged directly, by training every point with more than one budget (3 values of epochs: 4 and 8, 8 and 16)" in md
    assert "In 1 of 2 pairs the longer budget still gained 1 point or more" in md and "last quarter" not in md
    assert "| 8 | `bn` | 4 -> 8 | 75.00 -> 85.00 | +10.00 | no † |" in md
    assert "| 8 | `bn` | 8 -> 16 | 85.00 -> 85.40 | +0.40 | yes |" in md
    assert re.search(r"\| 8 \| 4 \| 0\.1 \| [^|]+ † \|", md) and not re.search(r"\| 8 \| 16 \| 0\.1 \| [^|]+ † \|", md)
    assert "4, 8 or 16 epochs per run" in md and "20 epochs" not in md
    # epochs is the budget: drawn as panels, the table's last axis column; the question is asked along batch size.
    assert "| batch_size | epochs | peak lr | `bn` |" in md and "## Does the error change along batch size?" in md
    fig = plot_sweep(load_sweep(folder))
    assert [ax.get_title() for ax in fig.axes if ax.get_lines()] == ["epochs = 4", "epochs = 8", "epochs = 16"]
    rows = [r.split(",") for r in (folder / "sweep.csv").read_text().splitlines()]
    assert rows[0][-4:] == ["val_best_mean", "budget_val_gain", "late_val_gain_max", "seeds_converged"]
    assert [r[-4:-2] for r in rows[1:]] == [["75.00", "10.00"], ["85.00", "0.40"], ["85.40", "0.40"]]
    assert [r[-1] for r in rows[1:]] == ["0", "2", "2"]


def test_a_sweep_says_which_runs_had_not_converged(tmp_path):
    # 8 epochs: the last quarter is epochs 7-8. bn's validation curve is flat by then; gn:4's
    # seed 2 still gains 3 points in it (judged on validation accuracy, the test curve is the same for both).
    flat, rising = [60, 70, 80, 84, 85, 85.5, 85.8, 85.6], [50, 60, 70, 75, 78, 80, 82, 83]
    test = [60, 70, 80, 84, 85, 85, 85, 85]
    axes = {"batch_size": [8, 32]}
    runs = [record(v, s, test, val=rising if (v, s, b) == ("gn:4", 2, 8) else flat, batch_size=b)
            for v in ("bn", "gn:4") for b in axes["batch_size"] for s in (1, 2)]
    folder = write_run(tmp_path / "sweep", runs, epochs=8, seeds=2, axes=axes, train_size=512, test_size=256)
    md = report(folder)
    assert "## Did every run converge?" in md and "last 2 epochs (the last quarter)" in md
    assert "1 of 8 runs had not converged" in md
    assert "The one-cycle schedule anneals the lr" in md and "`--over epochs=8,16`" in md
    assert "| 8 | `gn:4` | 1 of 2 | 3.00 |" in md
    assert re.search(r"\| 8 \| 0\.1 \| [^|]+ \| [^|]+ † \|", md)      # the gn:4 cell at batch 8 is marked
    rows = [r.split(",") for r in (folder / "sweep.csv").read_text().splitlines()]
    assert rows[0][-2:] == ["late_val_gain_max", "seeds_converged"]
    assert [r[-1] for r in rows[1:]] == ["2", "1", "2", "2"]
    flat_only = [r for r in runs if r["variant"] == "bn"]
    md = report(write_run(tmp_path / "flat", flat_only, epochs=8, seeds=2, axes=axes, train_size=512, test_size=256))
    assert "All 4 judged runs converged by this rule; the largest late gain was 0.30 points." in md


def render_script():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("render_report", Path(__file__).parent.parent / "scripts" / "render_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dir_lists_the_public_api():
    import normlab
    assert set(normlab.__all__) <= set(dir(normlab)) and "import_module" not in dir(normlab)
    assert "preprocess" in normlab.__all__


def test_preprocess_gives_what_the_model_expects(fashion_dir):
    import torch
    import normlab
    test = normlab.load_dataset("fashion-mnist", "test", fashion_dir)
    x = normlab.preprocess(test.images[:8], "fashion-mnist")
    info = test.info
    assert x.dtype == torch.float32 and x.shape == (8, 1, 28, 28)
    want = (test.images[:8].float() / 255 - info.mean[0]) / info.std[0]
    assert torch.allclose(x, want, atol=1e-5)
    with pytest.raises(normlab.errors.UserError, match="uint8"):
        normlab.preprocess(x, "fashion-mnist")


def test_times_of_stacked_seeds_are_called_shares(tmp_path):
    """bn's seeds trained 3 at a time as one network report a third of the stack's time each: the
    report must not present that as a bn run's cost next to gn:2's runs trained alone."""
    runs = [record("bn", s, [80.0, 81.0], val=[79.0, 80.0]) for s in (1, 2, 3)]
    runs += [record("gn:2", s, [78.0, 79.0 + s], val=[77.0, 78.0 + s]) for s in (1, 2, 3)]
    for r in runs[:3]:
        r.update(stacked=3, seconds=0.7)
    md = report(write_run(tmp_path / "run", runs, epochs=2, seeds=3))
    assert "Seeds of `bn` (3 at a time) were trained as one stacked network" in md
    assert "is each seed's share of that network's time plus its own evaluation" in md     # the table's note
    alone = report(write_run(tmp_path / "alone", [dict(r, stacked=1) for r in runs], epochs=2, seeds=3))
    assert "stacked network" not in alone
    for i, odd in enumerate(["3", [3], None, True, 2.5, {}, 0]):     # refused at the door, in one line
        folder = write_run(tmp_path / f"odd{i}", [dict(r, stacked=odd) for r in runs], epochs=2, seeds=3)
        assert run_cli("report", folder) == 2 and not (folder / "report.md").exists()
