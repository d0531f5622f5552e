"""A model named after a norm holds that norm and no other (the seeds' LN/GN nets were BN)."""

import pytest
import torch
from torch import nn

from normlab import build_model
from normlab.errors import UserError
from normlab.models import count_params
from normlab.norms import is_norm_layer
from normlab.variants import Variant

EXPECTED = {"bn": nn.BatchNorm2d, "gn:4": nn.GroupNorm, "gn:8": nn.GroupNorm, "gn:2": nn.GroupNorm,
            "ln": nn.GroupNorm, "ln-elem": nn.LayerNorm, "in": nn.InstanceNorm2d}


def norm_layers(model):
    return [m for m in model.modules() if is_norm_layer(m)]


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist", "mnist"])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_model_holds_exactly_the_named_norm(dataset, name):
    model = build_model(name, dataset)
    layers = norm_layers(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(layers) == len(convs) > 0, "one norm per 3x3 conv block"
    assert all(type(m) is EXPECTED[name] for m in layers)
    if name != "bn":
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    variant = Variant.parse(name)
    for layer, conv in zip(layers, convs):
        channels = conv.out_channels
        if variant.norm == "gn":
            assert layer.num_groups == variant.groups and layer.num_channels == channels
        elif variant.norm == "ln":
            # LayerNorm over (C, H, W) = one group, with a per-channel affine.
            assert layer.num_groups == 1 and layer.weight.shape == (channels,)
        elif variant.norm == "ln-elem":
            assert layer.normalized_shape[0] == channels and len(layer.normalized_shape) == 3
        elif variant.norm == "in":
            assert layer.affine and not layer.track_running_stats
        else:
            assert layer.num_features == channels


def test_none_has_no_norm_and_conv_biases():
    model = build_model("none", "cifar10")
    assert norm_layers(model) == []
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))


@pytest.mark.parametrize("dataset, limit", [("cifar10", 50_000), ("fashion-mnist", 20_000)])
def test_parameter_budgets(dataset, limit):
    for name in ("bn", "ln", "gn", "in", "none", "bn+l1"):
        assert count_params(build_model(name, dataset)) < limit
    # The per-element LayerNorm blows the budget: the reason it is not the usual choice.
    assert count_params(build_model("ln-elem", dataset)) > 2 * count_params(build_model("ln", dataset))


@pytest.mark.parametrize("dataset, shape", [("cifar10", (3, 32, 32)), ("mnist", (1, 28, 28))])
def test_forward_gives_logits(dataset, shape):
    model = build_model("gn:2", dataset)
    assert model(torch.randn(4, *shape)).shape == (4, 10)


def test_group_count_that_does_not_divide_names_valid_ones():
    with pytest.raises(UserError, match=r"gn:3 does not divide .* one of 1, 2, 4, 8"):
        build_model("gn:3", "cifar10")
    with pytest.raises(UserError, match="one of 1, 2, 4, 8"):
        build_model("gn:16", "fashion-mnist")


def test_gn_really_normalizes_by_groups():
    """Each (sample, group) of a GroupNorm output has mean 0 and variance 1; per channel it does not."""
    torch.manual_seed(0)
    layer = build_model("gn:4", "cifar10").C2.norm
    x = torch.randn(3, 16, 8, 8) * torch.arange(1, 17).view(1, 16, 1, 1) + 5
    y = layer(x).view(3, 4, 4 * 8 * 8)
    assert torch.allclose(y.mean(-1), torch.zeros(3, 4), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(3, 4), atol=1e-3)
    per_channel = layer(x).view(3, 16, -1).var(-1, unbiased=False)
    assert not torch.allclose(per_channel, torch.ones(3, 16), atol=0.1)


def test_convert_keeps_the_mode_a_shared_layer_and_subclasses():
    """convert left a BatchNorm2d shared at two paths in place at one of them, skipped subclasses of
    BatchNorm2d, and put training-mode layers into a model in eval mode (its output then depended
    on the batch)."""
    from torch import nn
    from normlab import convert

    class MyBN(nn.BatchNorm2d):
        pass

    shared = nn.BatchNorm2d(4)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), shared, nn.Sequential(nn.Conv2d(4, 4, 3), shared), MyBN(4)).eval()
    done = convert(net, "gn:2")
    assert [path for path, _, _ in done] == ["1", "2.1", "3"]
    assert isinstance(net[1], nn.GroupNorm) and net[2][1] is net[1] and isinstance(net[3], nn.GroupNorm)
    assert not any(m.training for m in net.modules())
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    convert(net, "brn")
    x = torch.randn(8, 1, 6, 6)
    assert torch.allclose(net(x)[:1], net(x[:1]))         # eval mode: an image's output ignores its batch
