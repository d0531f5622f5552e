"""The norm registry and what it opens: brn, frn and +ws against NumPy re-derivations of their
papers' equations, norms registered from user code and entry points, your own model via
module:function, convert() on any model, and the seed plan for any input shape."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab
from normlab import norms
from normlab.data import load_splits
from normlab.errors import UserError
from normlab.explain import explain, explanation_markdown
from normlab.layers import BatchRenorm2d, FilterResponseNorm2d, WSConv2d
from normlab.models import build_model, count_params, plan_for
from normlab.norms import is_norm_layer
from normlab.train import TrainConfig, train_run
from normlab.variants import Variant

TOL = 1e-10


def as_np(t):
    return t.detach().numpy()


# (hold, relax, step): fixed clips; plain BN while held; half-way through the relaxation; after it.
@pytest.mark.parametrize("hold, relax, step", [(0, 0, 0), (10, 40, 9), (10, 40, 30), (10, 40, 50)])
def test_batch_renorm_follows_ioffe_2017(hold, relax, step):
    torch.manual_seed(0)
    c = 5
    layer = BatchRenorm2d(c, hold=hold, relax=relax).double()
    with torch.no_grad():
        layer.num_batches_tracked.fill_(step)
        # Running estimates far from the batch's, so some r and d are clipped and some are not.
        layer.running_mean.copy_(torch.tensor([0.0, 3.0, -20.0, 0.5, 1.0]))
        layer.running_var.copy_(torch.tensor([1.0, 0.01, 4.0, 100.0, 2.0]))
        layer.weight.copy_(torch.linspace(0.5, 2, c))
        layer.bias.copy_(torch.linspace(-1, 1, c))
    x = (torch.randn(6, c, 3, 4, dtype=torch.float64) * 2 + 1).requires_grad_()
    old_mean, old_var = as_np(layer.running_mean).copy(), as_np(layer.running_var).copy()
    y = layer(x)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()

    xn, eps, g, b = as_np(x), 1e-5, as_np(layer.weight)[None, :, None, None], as_np(layer.bias)[None, :, None, None]
    mu, var = xn.mean((0, 2, 3)), xn.var((0, 2, 3))
    sigma_b, sigma = np.sqrt(var + eps), np.sqrt(old_var + eps)
    # The paper's warm-up: rmax 1, dmax 0 for `hold` steps, then linearly to 3 and 5 over `relax` steps.
    t = 1.0 if relax == 0 else min(max((step - hold) / relax, 0.0), 1.0)
    rmax, dmax = 1 + 2 * t, 5 * t
    assert (rmax, dmax) == {0: (3, 5), 9: (1, 0), 30: (2, 2.5), 50: (3, 5)}[step]
    r = np.clip(sigma_b / sigma, 1 / rmax, rmax)
    d = np.clip((mu - old_mean) / sigma, -dmax, dmax)
    assert (r == rmax).any() and (np.abs(d) == dmax).any()
    assert rmax == 1 or ((r < rmax).any() and (np.abs(d) < dmax).any()), "some r and d are not clipped"
    x_hat = (xn - mu[None, :, None, None]) / sigma_b[None, :, None, None]
    expected = (x_hat * r[None, :, None, None] + d[None, :, None, None]) * g + b
    assert np.abs(as_np(y) - expected).max() < TOL
    # No gradient through r and d: BatchNorm's backward, scaled by r.
    dy = as_np(upstream) * g * r[None, :, None, None]
    m = xn.size // c
    dx = (dy - dy.mean((0, 2, 3), keepdims=True) - x_hat * (dy * x_hat).mean((0, 2, 3), keepdims=True)) / sigma_b[None, :, None, None]
    assert np.abs(as_np(x.grad) - dx).max() < 1e-8
    # Running estimates move as BatchNorm's do (unbiased variance), and evaluation uses them.
    np.testing.assert_allclose(as_np(layer.running_mean), 0.9 * old_mean + 0.1 * mu, atol=TOL)
    np.testing.assert_allclose(as_np(layer.running_var), 0.9 * old_var + 0.1 * var * m / (m - 1), atol=TOL)
    assert layer.num_batches_tracked.item() == step + 1
    resumed = BatchRenorm2d(c, hold=hold, relax=relax).double()
    resumed.load_state_dict(layer.state_dict())    # a checkpoint keeps the step count, so the clips go on
    assert list(map(float, resumed.clips())) == list(map(float, layer.clips()))
    with torch.no_grad():
        evaluated = as_np(layer.eval()(x))
    rm, rv = as_np(layer.running_mean)[None, :, None, None], as_np(layer.running_var)[None, :, None, None]
    assert np.abs(evaluated - ((xn - rm) / np.sqrt(rv + eps) * g + b)).max() < TOL


@pytest.mark.parametrize("learnable_eps", [False, True])
def test_filter_response_norm_follows_singh_krishnan_2020(learnable_eps):
    torch.manual_seed(1)
    c = 4
    layer = FilterResponseNorm2d(c, learnable_eps=learnable_eps).double()
    with torch.no_grad():
        for p in (layer.weight, layer.bias, layer.tau):
            p.copy_(torch.randn(c))
        if learnable_eps:
            layer.eps_l.fill_(-0.3)     # the paper adds |eps_l|
    x = torch.randn(3, c, 1 if learnable_eps else 5, 1 if learnable_eps else 4, dtype=torch.float64) + 0.5
    y = as_np(layer(x))
    xn = as_np(x)
    eps = 1e-6 + (0.3 if learnable_eps else 0.0)
    nu2 = (xn ** 2).mean(axis=(2, 3), keepdims=True)
    col = lambda p: as_np(p)[None, :, None, None]
    expected = np.maximum(col(layer.weight) * xn / np.sqrt(nu2 + eps) + col(layer.bias), col(layer.tau))
    assert np.abs(y - expected).max() < TOL
    assert (y == np.broadcast_to(col(layer.tau), y.shape)).any() and (y > col(layer.tau)).any()
    # Independent of the batch: each sample alone gives the same output.
    assert np.abs(as_np(layer(x[1:2])) - y[1:2]).max() < TOL


def test_weight_standardization_follows_qiao_2019():
    torch.manual_seed(2)
    conv = WSConv2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w = as_np(conv.weight)
    mean = w.mean(axis=(1, 2, 3), keepdims=True)
    std = np.sqrt(((w - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True) + 1e-5)
    w_hat = (w - mean) / std
    expected = F.conv2d(x, torch.from_numpy(w_hat), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=TOL, rtol=0)
    # Variance var / (var + eps): Kaiming-initialized 3x3x3 kernels have var ~0.01, so eps shows at 1e-3.
    assert np.abs(w_hat.reshape(4, -1).mean(1)).max() < TOL and np.abs(w_hat.reshape(4, -1).var(1) - 1).max() < 1e-2
    # The weights are standardized before every forward pass, so shifting them changes nothing.
    with torch.no_grad():
        conv.weight.add_(3.0)
    assert torch.allclose(conv(x), expected, atol=1e-9, rtol=0)


def test_ws_variant_standardizes_the_normalized_convs():
    model = build_model("gn:8+ws", "cifar10")
    blocks = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert blocks and all(type(m) is WSConv2d for m in blocks)
    assert type(model.c11) is nn.Conv2d, "the classifier is not standardized"
    assert count_params(model) == count_params(build_model("gn:8", "cifar10"))


def test_frn_replaces_the_relu_and_brn_is_a_batchnorm_at_eval():
    frn = build_model("frn", "fashion-mnist")
    assert not any(isinstance(m, nn.ReLU) for m in frn.C1) and isinstance(frn.C1.norm, FilterResponseNorm2d)
    assert all(isinstance(m.norm, BatchRenorm2d) for m in build_model("brn", "cifar10") if hasattr(m, "norm"))


def test_brn_running_estimates_move_at_a_hundredth_per_step_and_bn_at_a_tenth():
    """brn's running average is slower than BatchNorm's: at batch 2 its r and d corrected toward
    noise with 0.1 (norms.BRN_MOMENTUM has the measurements)."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28) * 3 + 2
    for name, rate in (("brn", 0.01), ("bn", 0.1)):
        model = build_model(name, "fashion-mnist").train()
        first = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        seen = {}
        first.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].detach().clone()))
        model(x)
        batch_mean = seen["x"].mean((0, 2, 3))
        torch.testing.assert_close(first.running_mean, rate * batch_mean, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["brn", "frn", "gn:8+ws"])
def test_new_norms_train_under_bf16_autocast(name):
    """CUDA runs autocast to bf16 (train.autocast); CPU autocast feeds the layers the same dtypes."""
    model = build_model(name, "cifar10")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(4, 3, 32, 32))
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_seed_plans_stay_and_any_shape_gets_one(monkeypatch):
    assert count_params(build_model("bn", "cifar10")) == 40_210
    assert count_params(build_model("bn", "fashion-mnist")) == 19_378
    pools = lambda shape: sum(step == ("P",) for step in plan_for(shape))
    assert (pools((3, 64, 64)), pools((1, 40, 40)), pools((3, 224, 200)), pools((1, 8, 8))) == (3, 2, 5, 0)
    from normlab.models import NormNet
    for shape in ((3, 64, 64), (1, 40, 40), (3, 12, 20)):
        for name in ("bn", "gn:8+ws", "ln-elem", "frn"):
            model = NormNet(Variant.parse(name), shape, 3)
            assert model(torch.randn(2, *shape)).shape == (2, 3)
    # build_model takes shape and classes from the catalog, so a user's dataset of any shape works.
    from normlab import models
    from normlab.data.catalog import dataset_info
    info = dataset_info("cifar10")
    monkeypatch.setattr(models, "dataset_info", lambda name: type(info)(**{**info.__dict__, "shape": (3, 64, 64),
                                                                           "classes": ("a", "b")}))
    assert build_model("gn", "folder")(torch.randn(2, 3, 64, 64)).shape == (2, 2)


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.BatchNorm1d(16), nn.Linear(16, 2))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def test_convert_swaps_exactly_the_2d_batchnorms():
    model = Nested()
    model.body[1] = nn.BatchNorm2d(8, affine=False, track_running_stats=False)   # no tensors to copy a dtype from
    bn1d = model.head[2]
    replaced = normlab.convert(model, "gn:2")
    assert [path for path, _, _ in replaced] == ["stem.1", "body.0.1", "body.1"]
    assert all(type(old) is nn.BatchNorm2d and type(new) is nn.GroupNorm and new.num_groups == 2
               for _, old, new in replaced)
    assert model.body[0][1] is replaced[1][2] and model.head[2] is bn1d
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert model(torch.randn(2, 3, 9, 9)).shape == (2, 2)
    assert normlab.convert(model, "gn:2") == []


def test_convert_refuses_before_changing_anything_and_converts_convs_with_ws():
    model = Nested()
    model.stem[1] = nn.BatchNorm2d(8)
    model.body[1] = nn.BatchNorm2d(8)
    with pytest.raises(UserError, match=r"gn:3 does not divide the 8 channels of layer stem.1; use gn:G with G one of 1, 2, 4, 8"):
        normlab.convert(model, "gn:3")
    assert sum(type(m) is nn.BatchNorm2d for m in model.modules()) == 3
    replaced = normlab.convert(model, "frn+ws")
    assert [type(new).__name__ for _, _, new in replaced] == ["FilterResponseNorm2d"] * 3 + ["WSConv2d"] * 2
    assert model.stem[0].weight is replaced[3][1].weight, "the conv keeps its weights"


USER_MODULE = '''
from torch import nn


class Block(nn.Module):
    def __init__(self, norm_layer, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = norm_layer(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = norm_layer(channels)

    def forward(self, x):
        return nn.functional.relu(x + self.bn2(self.conv2(nn.functional.relu(self.bn1(self.conv1(x))))))


def tiny_resnet(norm_layer, in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), norm_layer(8), nn.ReLU(),
                         Block(norm_layer, 8), nn.Conv2d(8, 6, 1), norm_layer(6), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, num_classes))


def not_a_model(norm_layer, in_channels, num_classes):
    return 42


def raises(norm_layer, in_channels, num_classes):
    raise ValueError("boom")


def six_outputs(norm_layer, in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def rgb_only(norm_layer, in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


def no_weights(norm_layer, in_channels, num_classes):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def no_norms(norm_layer, in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken_nets.py").write_text("import no_such_package_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_nets:tiny_resnet"
    for name in ("my_nets", "broken_nets"):
        sys.modules.pop(name, None)


def test_a_user_model_builds_for_each_norm_and_trains(user_module, fashion_dir):
    bn = build_model("bn", "fashion-mnist", model=user_module)
    gn = build_model("gn:2", "fashion-mnist", model=user_module)
    assert [type(m) for m in bn.modules() if is_norm_layer(m)] == [nn.BatchNorm2d] * 4
    assert [(m.num_groups, m.num_channels) for m in gn.modules() if is_norm_layer(m)] == [(2, 8), (2, 8), (2, 8), (2, 6)]
    assert gn[0].in_channels == 1 and gn[-1].out_features == 10
    ws = build_model("gn:2+ws", "fashion-mnist", model=user_module)
    assert sum(type(m) is WSConv2d for m in ws.modules()) == 4
    md = explanation_markdown("fashion-mnist", ["bn", "gn:2"], 32, model=user_module)
    assert "The net has 4 normalization layers" in md and "| 3.bn2 | 8x28x28 | 8 x 25,088 | 16 | 64 x 3,136 | 16 |" in md
    train, test = load_splits("fashion-mnist", fashion_dir)
    cfg = TrainConfig(dataset="fashion-mnist", epochs=1, batch_size=32, lr=0.05, seed=3, model=user_module, train_limit=256)
    for name in ("bn", "gn:2"):
        result = train_run(Variant.parse(name), 3, cfg, train, test, torch.device("cpu"))
        assert result.record["status"] == "done" and result.record["params"] == count_params(result.model)
        assert any(is_norm_layer(m) for m in result.model.modules())


def test_seeds_of_a_user_model_train_one_at_a_time_at_small_batches(user_module, fashion_dir, tmp_path):
    # The stacking rule was measured on normlab's nets; tiny_resnet's Linear head and residual
    # block do not stack at all, and once made `compare --model ... --seeds 2 --batch-size 8` fail.
    from normlab.stacked import plan_stacks
    cpu = torch.device("cpu")
    assert plan_stacks(Variant.parse("bn"), 8, [1, 2], cpu, "fashion-mnist", user_module) == [[1], [2]]
    assert plan_stacks(Variant.parse("bn"), 8, [1, 2], cpu, "fashion-mnist") == [[1, 2]]
    run = normlab.compare(norms="bn", model=user_module, seeds=2, batch_size=8, epochs=1, train_limit=200,
                          test_limit=100, data_dir=fashion_dir, out=tmp_path / "run")
    assert [(r["seed"], r["status"], r.get("stacked")) for r in run.results["runs"]] == [(1, "done", None), (2, "done", None)]
    # The report describes the user's net, not normlab's: its parameters, its four norm layers.
    summary = (tmp_path / "run" / "summary.txt").read_text()
    params = count_params(build_model("bn", "fashion-mnist", model=user_module))
    assert f"--model {user_module}" in summary and f"bn  {params:>8,}" in summary and "NormNet" not in summary
    report = (tmp_path / "run" / "report.md").read_text()
    assert "The net has 4 normalization layers" in report and "3.bn2" in report
    with pytest.raises(UserError, match="--dropout is for normlab's own nets"):
        normlab.compare(norms="bn", model=user_module, dropout=0.1, data_dir=fashion_dir, out=tmp_path / "never")


@pytest.mark.parametrize("spec, words", [
    ("my_nets:tiny_resnet#gn:4", r"gn:4 does not divide the 6 channels of layer 5 in --model my_nets:tiny_resnet; "
                                 r"use gn:G with G one of 1, 2, 3, 6"),
    ("my_nets", r"--model 'my_nets' is not module:function"),
    ("no_such_module_x:net", r"cannot import 'no_such_module_x' for --model no_such_module_x:net \(ModuleNotFoundError"),
    ("broken_nets:net", r"cannot import 'broken_nets' .*no_such_package_here"),
    ("my_nets:missing", r"module 'my_nets' has no function 'missing'"),
    ("my_nets:not_a_model", r"returned int, not an nn.Module"),
    # each of these once got as far as training, then stopped with a traceback
    ("my_nets:raises", r"--model my_nets:raises raised ValueError \(boom\); fix my_nets:raises: it is called as "),
    ("os:system", r"--model os:system raised TypeError"),
    ("my_nets:six_outputs", r"returns a tensor of shape \(2, 6\) for 2 images; expected 2 x 10 logits"),
    ("my_nets:rgb_only", r"fails on a batch of 2 images of 1x28x28 \(RuntimeError: "),
    ("my_nets:no_weights", r"has no trainable parameters"),
    # every variant would have trained this one net, and the report compared them as if they differed
    ("my_nets:no_norms", r"--model my_nets:no_norms never calls norm_layer, so every variant would train the same net"),
])
def test_user_model_errors_are_one_line(user_module, spec, words):
    spec, _, variant = spec.partition("#")
    with pytest.raises(UserError, match=words) as info:
        build_model(variant or "bn", "fashion-mnist", model=spec)
    assert "\n" not in str(info.value)


@pytest.fixture
def registry():
    saved = dict(norms.NORMS), dict(norms.ALIASES)
    yield norms
    norms.NORMS.clear(), norms.NORMS.update(saved[0])
    norms.ALIASES.clear(), norms.ALIASES.update(saved[1])


def test_a_norm_registered_from_user_code_is_one_entry(registry):
    normlab.register_norm("rms", lambda c, h, w, g: FilterResponseNorm2d(c), aliases=("rmsnorm",))
    v = Variant.parse("rmsnorm+l1")
    assert str(v) == "rms+l1" and not v.depends_on_batch
    model = build_model(v, "fashion-mnist")
    assert sum(isinstance(m, FilterResponseNorm2d) and is_norm_layer(m) for m in model.modules()) == 8
    # explain knows nothing about it and says so instead of failing.
    text = explanation_markdown("fashion-mnist", ["bn", "rms"], 32)
    assert "`rms`: explain does not know this norm" in text and "rms: explain does not know this norm" in text
    assert "rms" in explain().to_json()["unknown"]
    with pytest.raises(UserError, match="norm name 'bn' is already taken by 'bn'"):
        normlab.register_norm("bn", lambda c, h, w, g: nn.Identity())
    with pytest.raises(UserError, match="norm name 'layernorm' is already taken by 'ln'"):
        normlab.register_norm("other", lambda c, h, w, g: nn.Identity(), aliases=("layernorm",))
    with pytest.raises(UserError, match="cannot register norm 'Bad Name'"):
        normlab.register_norm("Bad Name", lambda c, h, w, g: nn.Identity())


def test_a_registered_norm_with_facts_is_worked_and_checked_by_explain(registry):
    # RMS over (C, H, W) per sample: LayerNorm without the mean, written as one registry entry.
    class RMSNorm(nn.Module):
        def forward(self, x):
            return x / (x.pow(2).mean((1, 2, 3), keepdim=True) + 1e-5).sqrt()
    facts = norms.Facts(("N",), "y = x / sqrt(mean(x^2) + eps)", lambda x, s: x / np.sqrt(s.mean_square + 1e-5),
                        lambda c, h, w: 0, "0")
    normlab.register_norm("rms", lambda c, h, w, g: RMSNorm(), title="RMSNorm", facts=facts)
    entry = explain().to_json()["norms"]["rms"]
    assert entry["count"] == 3 and entry["axes"] == ["C", "H", "W"] and entry["params"] == 0
    assert entry["max_abs_diff_vs_torch"] < 1e-12


def test_norms_from_a_package_entry_point(registry, tmp_path, monkeypatch):
    dist = tmp_path / "normplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: normplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[normlab.norms]\nplug = normplug_mod:factory\n")
    (tmp_path / "normplug_mod.py").write_text("from torch import nn\n\ndef factory(c, h, w, g):\n    return nn.GroupNorm(2, c)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(norms, "_plugins_loaded", False)
    assert str(Variant.parse("plug")) == "plug"
    assert all(m.num_groups == 2 for m in build_model("plug", "cifar10").modules() if isinstance(m, nn.GroupNorm))
    (dist / "entry_points.txt").write_text("[normlab.norms]\nbroken = normplug_gone:factory\n")
    monkeypatch.setattr(norms, "_plugins_loaded", False)
    with pytest.raises(UserError, match=r"cannot load norm 'broken' from entry point normplug_gone:factory \(ModuleNotFoundError"):
        Variant.parse("bn")
    sys.modules.pop("normplug_mod", None)


def test_a_norm_registered_at_run_time_trains_in_worker_processes(registry, fashion_dir, tmp_path):
    from own_norms import per_channel
    normlab.register_norm("perchan", per_channel, aliases=("per-channel",))
    out = tmp_path / "run"
    run = normlab.compare(norms="per-channel,bn", seeds=2, epochs=1, batch_size=64, train_limit=256, data_dir=fashion_dir,
                          out=out, workers=2)
    records = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(r["variant"] for r in records) == ["bn", "bn", "perchan", "perchan"] and run.variants == ["perchan", "bn"]
    assert {r["status"] for r in records} == {"done"} and os.getpid() not in {r["pid"] for r in records}
    for name in ("curves.png", "misclassified-perchan.png", "summary.txt", "report.md", "report.html", "explain.md",
                 "checkpoints/perchan-seed1.pt", "checkpoints/perchan-seed2.pt"):
        assert (out / name).is_file(), name
    state = torch.load(out / "checkpoints" / "perchan-seed1.pt", weights_only=True)["model"]
    assert any(key.endswith("norm.weight") for key in state) and not any("running_mean" in key for key in state)


def test_a_norm_workers_cannot_import_is_refused_at_the_door(registry, fashion_dir, tmp_path, monkeypatch):
    def from_main(c, h, w, g):
        return nn.GroupNorm(1, c)
    from_main.__qualname__, from_main.__module__ = "from_main", "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "from_main", from_main, raising=False)  # so pickle itself would pass it
    normlab.register_norm("lam", lambda c, h, w, g: nn.GroupNorm(1, c))
    normlab.register_norm("mainly", from_main)
    for name, why in (("lam", "lambda"), ("mainly", "from_main is defined in __main__")):
        with pytest.raises(UserError, match=rf"norm {name!r} was registered in this process and worker processes cannot "
                                            rf"import its factory \(.*{why}.*\); use --workers 1, define the factory in an "
                                            r"importable module, or register it through the normlab.norms entry point"):
            normlab.compare(norms=f"bn,{name}", epochs=1, data_dir=fashion_dir, out=tmp_path / name, workers=2)
        assert not (tmp_path / name).exists()
    # One process needs no pickling: the same norm trains there.
    normlab.compare(norms="lam", epochs=1, batch_size=64, train_limit=128, data_dir=fashion_dir, out=tmp_path / "one")
    assert (tmp_path / "one" / "report.md").is_file()
