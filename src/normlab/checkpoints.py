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
                    map_location="cpu", own_net: bool | None = None, chosen: bool = False) -> dict:
    """The checkpoint train_run wrote for (variant, seed); with ``model``, its weights are
    checked against the model's and loaded into it: the last epoch's, or with ``chosen`` those
    of the epoch validation chose (its "chosen" entry; a checkpoint without one has only the
    last). ``own_net``: whether the run trained normlab's net (not --model's), whose block order
    must match; by default, whether ``model`` is one."""
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
        problem = weights_problem(model.state_dict(), saved["model"])
        if problem:
            raise UserError(f"{path} does not fit {variant}: {problem}", FIX)
    kept = saved.get("chosen")
    if kept is not None:
        epoch = kept.get("epoch") if isinstance(kept, dict) else None
        problem = ("its 'chosen' entry is not an epoch and its weights" if not (isinstance(epoch, int) and epoch >= 1)
                   else weights_problem(model.state_dict() if model is not None else saved["model"], kept.get("model"), "chosen"))
        if problem:
            raise UserError(f"{path} does not fit {variant}: {problem}", FIX)
    if model is not None:
        model.load_state_dict(kept["model"] if chosen and kept is not None else saved["model"])
    return saved


def weights_problem(expected: dict, state, entry: str = "model") -> str | None:
    """Why ``state`` cannot be loaded where ``expected`` (a model's state dict) fits (the first
    reason, on one line), or None. load_state_dict would say it in a many-line RuntimeError,
    after copying what did fit."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return f"its '{entry}' entry is not a state dict of named tensors"
    if not (isinstance(expected, dict) and all(isinstance(v, torch.Tensor) for v in expected.values())):
        return "its 'model' entry is not a state dict of named tensors"
    for names, what in ((sorted(expected.keys() - state.keys()), "lacks"), (sorted(state.keys() - expected.keys()), "has unexpected")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            return f"it {what} weights {names[0]}{more} (another variant's or another model's weights?)"
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            return f"{name} is {tuple(state[name].shape)} in the file, {tuple(tensor.shape)} in the model"
    return None
