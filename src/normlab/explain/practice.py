"""What each choice means in practice: the batch (in)dependence measured on the worked example,
and the GN paper's ImageNet numbers."""

from __future__ import annotations

GN_PAPER = 'Yuxin Wu and Kaiming He, "Group Normalization", ECCV 2018 (arXiv:1803.08494)'
GN_PAPER_URL = "https://arxiv.org/abs/1803.08494"
# ResNet-50, ImageNet validation top-1 error (%), 8 GPUs. Table 1: 32 images per GPU.
ERROR_AT_32 = {"bn": 23.6, "ln": 25.3, "in": 28.4, "gn": 24.1}
# Table 2 / Figure 1: 2 images per GPU.
ERROR_AT_2 = {"bn": 34.7, "gn": 24.1}


def notes(batch_dependence: dict[str, float], bn_eval_change: float | None = None) -> dict[str, str]:
    """A few lines per norm. ``batch_dependence``: how far sample 0's output moved when the other
    samples were redrawn; ``bn_eval_change``: how far BN's eval-mode output is from its training one."""
    moved = {k: f"{v:.3g}" for k, v in batch_dependence.items()}
    eval_line = ("" if bn_eval_change is None else
                 f" After the one step worked here, the same input comes out up to {bn_eval_change:.3g} different in evaluation mode.")
    independent = "Independent of the batch (sample 0's output moved by {} when the other samples were redrawn) " \
                  "and the same computation in training and evaluation."
    return {
        "bn": (f"Depends on the batch: sample 0's output moved by up to {moved['bn']} when the other samples were "
               "redrawn, so an image's output depends on what it is batched with. Training normalizes with the "
               "batch's statistics, evaluation with the running estimates." + eval_line +
               f" Small batches make the statistics noisy: in the GN paper, ResNet-50's ImageNet error is "
               f"{ERROR_AT_32['bn']}% at 32 images per GPU and {ERROR_AT_2['bn']}% at 2."),
        "ln": (independent.format(moved["ln"]) + " One mean per sample over all channels assumes the channels "
               f"are alike: {ERROR_AT_32['ln']}% ImageNet error at 32 images per GPU (BN {ERROR_AT_32['bn']}%)."),
        "gn": (independent.format(moved["gn"]) + " Between LN (G = 1) and IN (G = C): only the channels of a "
               f"group share statistics. {ERROR_AT_32['gn']}% ImageNet error at 32 images per GPU and "
               f"{ERROR_AT_2['gn']}% at 2, where BN has {ERROR_AT_2['bn']}%."),
        "in": (independent.format(moved["in"]) + " Each channel of each image is normalized on its own, which "
               "removes every channel's per-image contrast (it was introduced for style transfer, Ulyanov et al. "
               f"2016): {ERROR_AT_32['in']}% ImageNet error at 32 images per GPU, the worst of the four."),
    }


def citation() -> str:
    return (f"ImageNet numbers: {GN_PAPER}, {GN_PAPER_URL}: ResNet-50 validation error, "
            "Table 1 (32 images per GPU) and Table 2 (2 images per GPU).")
