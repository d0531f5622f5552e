"""Per-layer statistics over the first training steps, for docs/recipe.md.

    nice .venv/bin/python scripts/recipe_probe.py --norms bn,ln --steps 60 [--recipe baseline]

For each conv block, every few steps: the kernel's norm, its relative update |dw|/|w| (the
effective step a scale-invariant kernel takes), the share of ReLU outputs that are non-zero,
and the dead channels (never active in the batch); plus the logits' spread. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from normlab import train as T
from normlab.data import load_splits
from normlab.data.batches import Normalizer, TrainBatches
from normlab.data.split import holdout
from normlab.variants import Variant

from recipe_diagnosis import RECIPES, CONFIG_KNOBS, recipe, subset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--norms", default="bn,ln,gn:4")
    p.add_argument("--recipe", default="baseline")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    full, _ = load_splits("fashion-mnist")
    train, _, _ = holdout(subset(full, 0, 4000))
    knobs = RECIPES[args.recipe]
    device = torch.device("cpu")
    for norm in args.norms.split(","):
        cfg = T.TrainConfig(epochs=10, seed=1, **{k: v for k, v in knobs.items() if k in CONFIG_KNOBS})
        batches = TrainBatches(train.images, train.labels, train.info, cfg.batch_size, Normalizer(train.info, device, True))
        torch.manual_seed(1)
        with recipe(knobs):
            training = T.Training(Variant.parse(norm), cfg, device, len(batches))
        blocks = [(name, m) for name, m in training.model.named_children() if hasattr(m, "relu")]
        active = {}
        for name, m in blocks:
            m.relu.register_forward_hook(lambda mod, i, out, name=name: active.__setitem__(name, out.detach()))
        step, generator = 0, torch.Generator().manual_seed(1_000_004)
        while step < args.steps:
            for x, y in batches.epoch(generator):
                before = {name: m.conv.weight.detach().clone() for name, m in blocks}
                loss, _ = training.step(x, y)
                step += 1
                if step % args.every == 0 or step == 1:
                    with torch.no_grad():
                        logits = training.model(x)
                    row = {"norm": norm, "recipe": args.recipe, "step": step, "loss": round(loss.item(), 4),
                           "lr": round(training.lr, 5), "logit_std": round(logits.std().item(), 4), "layers": {}}
                    for name, m in blocks:
                        w = m.conv.weight.detach()
                        out = active[name]
                        row["layers"][name] = {
                            "w_norm": round(w.norm().item(), 4),
                            "rel_step": round(((w - before[name]).norm() / before[name].norm()).item(), 5),
                            "active": round((out > 0).float().mean().item(), 3),
                            "dead_channels": int(((out > 0).flatten(2).any(2).any(0) == 0).sum().item()),
                            "channels": out.shape[1]}
                    print(json.dumps(row), flush=True)
                if step >= args.steps:
                    break


if __name__ == "__main__":
    main()
