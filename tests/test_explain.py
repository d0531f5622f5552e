"""`normlab explain`: the hand computation against PyTorch's layers and an independent NumPy one,
the JSON, markdown and figure it writes, the report's section, and bad shapes as one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_cli
from normlab.norms import HOLD
from normlab.explain import Shape, explain, explanation_markdown
from normlab.explain.network import net_table
from normlab.models import PLANS, build_model
from normlab.report.summary import norm_params

EPS = 1e-5
TOL = 1e-5
# (N, C, H, W, G, seed): the seeds' 3x4x2x2 case, and groups strictly between 1 and C.
SHAPES = [(3, 4, 2, 2, 2, 1), (2, 6, 3, 3, 3, 7), (4, 8, 1, 3, 4, 0), (5, 4, 2, 3, 1, 3), (2, 12, 2, 2, 6, 11),
          (3, 4, 2, 2, 4, 5)]


def numpy_reference(x: np.ndarray, norm: str, groups: int):
    """Written from the definitions with NumPy axis reductions, sharing no code with normlab:
    returns the normalized output and the means and biased variances in PyTorch's order."""
    n, c, h, w = x.shape
    if norm == "gn":
        view, axes = x.reshape(n, groups, c // groups, h, w), (2, 3, 4)
    else:
        view, axes = x, {"bn": (0, 2, 3), "ln": (1, 2, 3), "in": (2, 3)}[norm]
    mean = view.mean(axis=axes, keepdims=True)
    var = view.var(axis=axes, keepdims=True)  # ddof=0: the biased variance
    out = ((view - mean) / np.sqrt(var + EPS)).reshape(x.shape)
    return out, mean.ravel(), var.ravel()


def torch_layers(c: int, h: int, w: int, g: int) -> dict:
    """PyTorch's own layers, built here directly (not through normlab's factory)."""
    return {"bn": nn.BatchNorm2d(c), "ln": nn.GroupNorm(1, c), "gn": nn.GroupNorm(g, c),
            "in": nn.InstanceNorm2d(c, affine=True), "ln-elem": nn.LayerNorm([c, h, w])}


@pytest.mark.parametrize("n, c, h, w, g, seed", SHAPES)
def test_explained_numbers_match_numpy_and_torch(n, c, h, w, g, seed):
    result = explain(Shape(n, c, h, w, g), seed).to_json()
    x = np.array(result["input"], dtype=np.float64)
    assert x.shape == (n, c, h, w) and x.min() >= 0 and x.max() <= 9 and np.array_equal(x, np.round(x))
    layers = torch_layers(c, h, w, g)
    expected_count = {"bn": c, "ln": n, "gn": n * g, "in": n * c}
    for norm in ("bn", "ln", "gn", "in"):
        entry = result["norms"][norm]
        out = np.array(entry["output"])
        ref_out, ref_mean, ref_var = numpy_reference(x, norm, g)
        assert entry["count"] == expected_count[norm] == len(entry["mean"]) == len(entry["var"])
        np.testing.assert_allclose(entry["mean"], ref_mean, atol=TOL, rtol=0)
        np.testing.assert_allclose(entry["var"], ref_var, atol=TOL, rtol=0)
        np.testing.assert_allclose(out, ref_out, atol=TOL, rtol=0)
        with torch.no_grad():
            torch_out = layers[norm].double().train()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(out, torch_out, atol=TOL, rtol=0)
        # The number normlab reports for its own make_norm layer is small and honest.
        assert entry["max_abs_diff_vs_torch"] < 1e-12
        assert np.abs(out - torch_out).max() < 1e-12
        assert entry["params"] == entry["params_torch"] == sum(p.numel() for p in layers[norm].parameters()) == 2 * c
        # Each group's listed values are exactly the ones its mean was computed from.
        for group, mean in zip(entry["groups"], entry["mean"]):
            assert len(group["values"]) == n * c * h * w // entry["count"] == entry["values_each"]
            assert abs(np.mean(group["values"]) - mean) < TOL
    # Batch Renormalization at its first step, inside its warm-up (rmax 1, dmax 0: r = 1, d = 0),
    # is BatchNorm; FRN with its TLU at tau = 0.
    assert HOLD > 0 and f"for the first {HOLD} training steps" in result["norms"]["brn"]["formula"]
    np.testing.assert_allclose(result["norms"]["brn"]["output"], numpy_reference(x, "bn", g)[0], atol=TOL, rtol=0)
    frn = np.maximum(x / np.sqrt((x ** 2).mean(axis=(2, 3), keepdims=True) + 1e-6), 0)
    np.testing.assert_allclose(result["norms"]["frn"]["output"], frn, atol=TOL, rtol=0)
    assert max(result["norms"][k]["max_abs_diff_vs_torch"] for k in ("brn", "frn")) < 1e-12
    per_element = result["norms"]["ln"]["per_element"]
    assert per_element["params"] == per_element["params_torch"] == 2 * c * h * w
    assert per_element["max_abs_diff_vs_torch"] < 1e-12


@pytest.mark.parametrize("n, c, h, w, g, seed", SHAPES[:3])
def test_batchnorm_running_estimates_use_the_unbiased_variance(n, c, h, w, g, seed):
    result = explain(Shape(n, c, h, w, g), seed).to_json()
    bn = result["norms"]["bn"]
    x = np.array(result["input"], dtype=np.float64)
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn["running"]["running_var"], 0.9 * 1 + 0.1 * unbiased, atol=TOL, rtol=0)
    np.testing.assert_allclose(bn["running"]["running_mean"], 0.1 * x.mean(axis=(0, 2, 3)), atol=TOL, rtol=0)
    layer = nn.BatchNorm2d(c).double().train()
    with torch.no_grad():
        layer(torch.from_numpy(x))
        evaluated = layer.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(bn["running"]["running_var"], layer.running_var.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(bn["eval"]["output"], evaluated, atol=TOL, rtol=0)
    assert bn["running"]["max_abs_diff_vs_torch"] < 1e-12 and bn["eval"]["max_abs_diff_vs_torch"] < 1e-12
    # The biased variance would give a different running_var: the convention is really tested.
    assert not np.allclose(bn["running"]["running_var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3)), atol=TOL, rtol=0)


def test_only_batchnorm_depends_on_the_rest_of_the_batch():
    moved = {norm: v["batch_dependence"] for norm, v in explain().to_json()["norms"].items()}
    assert moved["bn"] > 0.01
    assert moved["ln"] == moved["gn"] == moved["in"] == 0.0


def test_groupnorm_spans_layernorm_and_instancenorm():
    x = explain(Shape(3, 4, 2, 2, 1), 2).to_json()["norms"]
    assert np.allclose(x["gn"]["output"], x["ln"]["output"], atol=1e-12)
    x = explain(Shape(3, 4, 2, 2, 4), 2).to_json()["norms"]
    assert np.allclose(x["gn"]["output"], x["in"]["output"], atol=1e-12)


def test_a_mislabelled_layer_is_caught(monkeypatch):
    """The seeds' bug: an "ln" net that holds a BatchNorm. The check must see it."""
    import normlab.explain.check as check
    monkeypatch.setattr(check, "make_norm", lambda variant, c, h, w: nn.BatchNorm2d(c))
    norms = explain().to_json()["norms"]
    assert norms["bn"]["max_abs_diff_vs_torch"] < 1e-12
    assert min(norms[k]["max_abs_diff_vs_torch"] for k in ("ln", "gn", "in")) > 0.1


def test_json_has_the_designed_shape(capsys):
    assert run_cli("explain", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert np.array(result["input"]).shape == (3, 4, 2, 2)
    assert list(result["norms"]) == ["bn", "ln", "gn", "in", "brn", "frn"]
    counts = {"bn": 4, "ln": 3, "gn": 6, "in": 12, "brn": 4, "frn": 12}
    axes = {"bn": ["N", "H", "W"], "ln": ["C", "H", "W"], "gn": ["C", "H", "W"], "in": ["H", "W"], "brn": ["N", "H", "W"],
            "frn": ["H", "W"]}
    for norm, entry in result["norms"].items():
        assert {"axes", "count", "mean", "var", "output", "params", "max_abs_diff_vs_torch"} <= set(entry)
        assert entry["axes"] == axes[norm] and entry["count"] == counts[norm]
        assert entry["params"] == (12 if norm == "frn" else 8)     # FRN: weight, bias and tau per channel
        assert np.array(entry["output"]).shape == (3, 4, 2, 2)
        assert isinstance(entry["max_abs_diff_vs_torch"], float)
    assert result["eps"] == 1e-5 and "unbiased" in result["variance"]["bn_running_var"]


def test_text_and_markdown(capsys):
    assert run_cli("explain", "--seed", "4") == 0
    text = capsys.readouterr().out
    norms = explain(Shape(), 4).to_json()["norms"]
    for words in ("BatchNorm (bn)", "LayerNorm (ln)", "GroupNorm (gn)", "InstanceNorm (in)", "eps = 1e-05", "unbiased",
                  "running_var", "Group Normalization", "ECCV 2018", "23.6%", "34.7%"):
        assert words in text
    assert f"mean = {norms['bn']['groups'][0]['sum']:g}/12 = {norms['bn']['mean'][0]:.6g}" in text
    assert run_cli("explain", "--markdown", "--seed", "4") == 0
    md = capsys.readouterr().out
    assert md.startswith("## How each normalization computes its statistics")
    assert md.count("\n### ") == 7 and "| statistic | values | mean | var |" in md
    assert f"| channel 0 | " in md and f"| {norms['bn']['mean'][0]:.6g} | {norms['bn']['var'][0]:.6g} |" in md
    assert "28.4%" in md and "arXiv:1803.08494" in md
    # Tables keep their columns: no row has more cells than its header.
    for line in md.splitlines():
        if line.startswith("| statistic"):
            width = line.count("|")
        elif line.startswith("| sample 0, channel 0 |"):
            assert line.count("|") == width


def test_figure_is_a_png(tmp_path, capsys):
    path = tmp_path / "new" / "norms.png"
    assert run_cli("explain", "--figure", path, "--groups", "4", "--channels", "8") == 0
    assert f"figure: {path}" in capsys.readouterr().out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 3 * image.shape[0]
    assert run_cli("explain", "--figure", path) == 0            # a figure it drew may be drawn again


def test_a_file_normlab_did_not_draw_is_not_replaced(tmp_path, capsys):
    import matplotlib.pyplot as plt
    mine, link = tmp_path / "mine.png", tmp_path / "link.png"
    plt.figure().savefig(mine)                                   # a PNG of yours, drawn by matplotlib
    plt.close("all")
    link.symlink_to(tmp_path / "elsewhere.png")
    before = mine.read_bytes()
    for path in (mine, link):
        assert run_cli("explain", "--figure", path) == 2
        assert "exists and is not a figure normlab explain drew" in capsys.readouterr().err
    assert mine.read_bytes() == before and link.is_symlink() and not (tmp_path / "elsewhere.png").exists()


@pytest.mark.parametrize("args, words", [
    (["--groups", "3"], "--groups 3 does not divide 4 channels; use --groups with one of 1, 2, 4"),
    (["--channels", "6", "--groups", "4"], "one of 1, 2, 3, 6"),
    (["--batch", "0"], "--batch 0 must be at least 1"),
    (["--width", "-2"], "--width -2 must be at least 1"),
    (["--groups", "0"], "--groups 0 must be at least 1"),
    (["--batch", "1"], "--batch 1 leaves BatchNorm no batch"),
    (["--height", "1", "--width", "1"], "gives InstanceNorm one value per channel"),
    (["--batch", "1000", "--channels", "1000"], "too many to explain by hand"),
    (["--seed", "-1"], "--seed -1 must be 0 or more"),
    (["--batch", "two"], "'two' is not a whole number"),
])
def test_bad_shapes_are_one_line_and_exit_2(args, words, tmp_path, capsys):
    figure = tmp_path / "f.png"
    code = run_cli("explain", *args, "--figure", figure)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert words in err and "\n" not in err and "Traceback" not in err
    assert captured.out == "" and not figure.exists()


def test_bad_figure_path_leaves_nothing(tmp_path, capsys):
    assert run_cli("explain", "--figure", tmp_path / "norms.jpg") == 2
    assert run_cli("explain", "--figure", tmp_path) == 2
    err = capsys.readouterr().err
    assert "is not a .png file name" in err and "is a folder" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_shape_as_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "normlab", "explain", "--groups", "3"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "normlab explain: error: --groups 3 does not divide 4 channels; use --groups with one of 1, 2, 4\n"


@pytest.mark.parametrize("dataset, variants, batch", [
    ("fashion-mnist", ["bn", "ln", "gn:4", "bn+l1", "in", "ln-elem", "none"], 128),
    ("cifar10", ["gn:8", "bn"], 2),
])
def test_report_section_counts_the_runs_own_net(dataset, variants, batch):
    table = net_table(dataset, variants, batch)
    # bn+l1 normalizes as bn does: one column; none has no layers.
    assert len(table["columns"]) == len([v for v in variants if v not in ("bn+l1", "none")])
    rule = {"bn": lambda c, g: c, "ln": lambda c, g: batch, "ln-elem": lambda c, g: batch,
            "gn": lambda c, g: batch * g, "in": lambda c, g: batch * c}
    for name, cells in table["columns"].items():
        norm, _, groups = name.partition(":")
        model = build_model(name, dataset)
        assert sum(cell["params"] for cell in cells) == norm_params(model)
        assert len(cells) == sum(1 for step in PLANS[model.input_shape] if step[0] == "C")
        for cell in cells:
            # Every value of the activation belongs to exactly one statistic.
            assert cell["count"] * cell["values_each"] == batch * cell["channels"] * cell["height"] * cell["width"]
            assert cell["count"] == rule[norm](cell["channels"], int(groups or 0))
    md = explanation_markdown(dataset, variants, batch, figure="explain-norms.png")
    assert md.startswith("## How each normalization computes its statistics")
    assert "![" in md and "(explain-norms.png)" in md
    assert f"batch size {batch}" in md and "| C1.norm |" in md and "| all norm layers |" in md
    first = table["columns"][next(iter(table["columns"]))][0]
    assert f"{first['count']:,} x {first['values_each']:,}" in md


@pytest.mark.parametrize("c, seed", [(4, 1), (6, 3)])
def test_weight_standardization_is_worked_and_checked(c, seed):
    ws = explain(Shape(2, c, 2, 2, 2), seed).to_json()["ws"]
    kernel = np.array(ws["kernel"], dtype=np.float64)
    assert kernel.shape == (2, c, 2, 2)
    mean = kernel.mean(axis=(1, 2, 3), keepdims=True)
    var = kernel.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(ws["mean"], mean.ravel(), atol=TOL, rtol=0)
    np.testing.assert_allclose(ws["standardized"], (kernel - mean) / np.sqrt(var + EPS), atol=1e-12, rtol=0)
    assert ws["max_abs_diff_vs_torch"] < 1e-12 and ws["axes"] == ["in", "kh", "kw"]


def test_the_guide_shows_what_explain_prints(capsys, tmp_path):
    """docs/explain.md's example, line for line (its `...` lines mark what it leaves out): it had
    gone stale when BatchRenorm and FilterResponseNorm joined the explanation."""
    from pathlib import Path
    doc = (Path(__file__).parents[1] / "docs" / "explain.md").read_text()
    command = "$ normlab explain --figure docs/explain-norms.png\n"
    block = doc.split(command, 1)[1].split("```", 1)[0]
    assert run_cli("explain", "--figure", tmp_path / "explain.png") == 0
    printed = capsys.readouterr().out.replace(str(tmp_path / "explain.png"), "docs/explain-norms.png").splitlines()
    shown = block.splitlines()
    assert len(shown) > 60 and shown[0] == printed[0]
    missing = [line for line in shown if line.strip() != "..." and line not in printed]
    assert not missing, missing


def test_the_net_table_names_every_variant_and_every_batch_dependent_norm():
    """bn+l1 beside bn vanished from the table, alone it was headed `bn`; brn was called batch-independent."""
    from normlab.explain.network import table_markdown
    text = table_markdown(net_table("fashion-mnist", ["bn", "bn+l1", "brn", "frn"], 32), 2)
    assert "| `bn`, `bn+l1` means x values each | `bn`, `bn+l1` params |" in text
    assert "`bn`, `bn+l1` and `brn`: the count of values grows with the batch size" in text
    assert "`frn` subtracts no mean" in text
    alone = table_markdown(net_table("fashion-mnist", ["bn+l1", "ln"], 32), 2)
    assert "| `bn+l1` means x values each |" in alone and "`bn` means" not in alone
