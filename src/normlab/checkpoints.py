"""Checkpoints read back: one of this variant and seed, whose weights fit the model, or one line
saying why not.

Resume (train.py) and the report and notebooks (runs.Run.load_model) read checkpoints through
``read_checkpoint``, so a bare tensor, another variant's weights or weights of the wrong shapes
are refused the same way on both paths, before any weight is copied.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .models import BLOCK_ORDER, OLD_BLOCK_ORDER, NormNet
from .storage import load_checkpoint
from .variants import Variant

TRAINING_KEYS = frozenset({"model", "optimizer", "schedule", "epochs", "status"})
FIX = "delete it to retrain that variant, or restore it from a backup"


def read_checkpoint(path: Path, variant: Variant, seed: int, model: nn.Module | None = None,
                    map_location="cpu", own_net: bool | None = None) -> dict:
    """The checkpoint train_run wrote for (variant, seed); with ``model``, its weights are
    checked against the model's and loaded into it. ``own_net``: whether the run trained
    normlab's net (not --model's), whose block order must match; by default, whether ``model`` is one."""
    saved = load_checkpoint(path, map_location)
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a normlab training checkpoint (it holds a bare {type(saved).__name__})", FIX)
    missing = TRAINING_KEYS - saved.keys()
    if missing:
        raise UserError(f"{path} is not a normlab training checkpoint (no {', '.join(sorted(missing))})", FIX)
    if (saved.get("variant"), saved.get("seed")) != (str(variant), seed):
        raise UserError(f"{path} holds {saved.get('variant')} seed {saved.get('seed')}, not {variant} seed {seed}", FIX)
    if (isinstance(model, NormNet) if own_net is None else own_net) and saved.get("block", OLD_BLOCK_ORDER) != BLOCK_ORDER:
        raise UserError(f"{path} holds a {saved.get('block', OLD_BLOCK_ORDER)} net (normlab before 0.2.0), and this "
                        f"normlab builds {BLOCK_ORDER} blocks, which those weights do not fit",
                        "retrain it: start the run again with --overwrite or another --out")
    if model is not None:
        problem = weights_problem(model, saved["model"])
        if problem:
            raise UserError(f"{path} does not fit {variant}: {problem}", FIX)
        model.load_state_dict(saved["model"])
    return saved


def weights_problem(model: nn.Module, state) -> str | None:
    """Why ``state`` cannot be loaded into ``model`` (the first reason, on one line), or None.
    load_state_dict would say it in a many-line RuntimeError, after copying what did fit."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return "its 'model' entry is not a state dict of named tensors"
    expected = model.state_dict()
    for names, what in ((sorted(expected.keys() - state.keys()), "lacks"), (sorted(state.keys() - expected.keys()), "has unexpected")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            return f"it {what} weights {names[0]}{more} (another variant's or another model's weights?)"
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            return f"{name} is {tuple(state[name].shape)} in the file, {tuple(tensor.shape)} in the model"
    return None
