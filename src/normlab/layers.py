"""The layers PyTorch does not have: Batch Renormalization, Filter Response Normalization with
its TLU, and Weight-Standardized convolution. Each follows its paper's equations; the tests
re-derive them in NumPy."""

from __future__ import annotations

import torch
from torch import nn


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32: statistics of bf16 activations (autocast on CUDA) lose digits."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class BatchRenorm2d(nn.BatchNorm2d):
    """Ioffe 2017, "Batch Renormalization": in training y = (x - mu_B) / sigma_B * r + d with
    r = clip(sigma_B / sigma, 1/rmax, rmax) and d = clip((mu_B - mu) / sigma, -dmax, dmax),
    mu and sigma the running estimates, r and d treated as constants (no gradient). Evaluation is
    BatchNorm's (running estimates), which are kept as BatchNorm keeps them (unbiased variance,
    a moving average at rate ``momentum``; normlab's ``brn`` uses 0.01, see norms.BRN_MOMENTUM).

    The clips follow the paper's warm-up (its sec. 4): plain BatchNorm (rmax 1, dmax 0) for the
    first ``hold`` training steps, while the running estimates are still meaningless, then rmax
    and dmax relaxed linearly to their final values over ``relax`` steps. The layer counts its own
    steps in ``num_batches_tracked``, a buffer checkpoints keep, so a resumed run goes on exactly.
    hold = relax = 0: the final clips from the first step."""

    def __init__(self, num_features: int, rmax: float = 3.0, dmax: float = 5.0, hold: int = 0, relax: int = 0,
                 eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.rmax, self.dmax, self.hold, self.relax = rmax, dmax, hold, relax

    def clips(self) -> tuple[torch.Tensor, torch.Tensor]:
        """rmax and dmax at this step, as tensors: reading the step count would sync a GPU."""
        step = self.num_batches_tracked - self.hold
        t = (step / self.relax).clamp(0, 1) if self.relax else (step >= 0).float()
        return 1 + (self.rmax - 1) * t, self.dmax * t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        mean, var = wide(x).mean((0, 2, 3)), wide(x).var((0, 2, 3), unbiased=False)
        std = (var + self.eps).sqrt()
        running_std = (self.running_var + self.eps).sqrt()
        rmax, dmax = (c.to(std.dtype) for c in self.clips())
        r = (std.detach() / running_std).clamp(1 / rmax, rmax)
        d = ((mean.detach() - self.running_mean) / running_std).clamp(-dmax, dmax)
        with torch.no_grad():
            count = x.numel() // x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / max(count - 1, 1), self.momentum)
            self.num_batches_tracked += 1
        scale, shift = self.weight * r / std, self.bias + self.weight * (d - mean * r / std)
        return (x * scale[:, None, None] + shift[:, None, None]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rmax={self.rmax:g}, dmax={self.dmax:g}, hold={self.hold}, relax={self.relax}"


class FilterResponseNorm2d(nn.Module):
    """Singh & Krishnan 2020, "Filter Response Normalization Layer": per sample and channel
    nu2 = mean(x^2 over H, W); y = max(gamma * x / sqrt(nu2 + eps) + beta, tau). No mean is
    subtracted and nothing depends on the batch; the TLU (max with a learned tau) replaces the
    ReLU that follows other norms. ``learnable_eps``: eps + |eps_l| with eps_l learned, which the
    paper uses where H x W is 1x1."""

    def __init__(self, num_features: int, eps: float = 1e-6, learnable_eps: bool = False):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features))
        self.eps_l = nn.Parameter(torch.zeros(1)) if learnable_eps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.eps if self.eps_l is None else self.eps + self.eps_l.abs()
        x = x * torch.rsqrt(wide(x).pow(2).mean((2, 3), keepdim=True) + eps).to(x.dtype)
        return torch.maximum(x * self.weight[:, None, None] + self.bias[:, None, None], self.tau[:, None, None])

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.eps_l is not None}"


class WSConv2d(nn.Conv2d):
    """Qiao et al. 2019, "Weight Standardization": each output channel's kernel is standardized
    over (in, kh, kw) before the convolution, W^ = (W - mean) / sqrt(var + eps), biased variance
    (the paper's equation 5; its released code adds eps to the unbiased std instead)."""

    eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean((1, 2, 3), keepdim=True)
        var = w.var((1, 2, 3), unbiased=False, keepdim=True)
        return self._conv_forward(x, (w - mean) * torch.rsqrt(var + self.eps), self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WSConv2d":
        """The same convolution, its weights shared, standardized from now on."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight, new.bias = conv.weight, conv.bias
        return new
