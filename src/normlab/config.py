"""What a training run is told: ``TrainConfig``, plain values, no PyTorch.

Every field is a command-line option of the same name (``--batch-size`` for ``batch_size``) of
every command that trains; its help is the field's metadata and its checks are ``validate``, so
a new field is one line here and nowhere else. Kept free of torch so that ``normlab --help``
and input errors answer at once.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields

from .errors import UserError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
# torch.manual_seed takes seeds below 2**63 here; train.py seeds epoch e with seed * 1_000_003 + e.
EPOCH_SEED_FACTOR = 1_000_003
MAX_SEED = (2**63 - 1) // EPOCH_SEED_FACTOR - 10**6
# The training set is padded once, whole (TrainBatches): 16 pixels already make a 28x28 set 4.6x larger in memory.
MAX_PAD = 16
# The most --lr, --weight-decay and --trust take. A run diverges long before (the default peak lr
# is 0.1), and from about 3.4e38, the largest float32, PyTorch's optimizer cannot even form the
# step: --lr 1e308 stopped with an overflow traceback instead of a one-line error.
MAX_RATE = 1e3


TRUST, TRUST_FROM_BATCH = 0.1, 32     # the default trust ratio, and the batch size it starts at (trust_used)
# How a batch-size sweep scales the peak lr (engine.RULES). sqrt, not linear: on the README's
# sweep (Fashion-MNIST, bn/gn:4/ln, batch 2-128, 3 seeds, 30 and 60 epochs) it gave a lower mean
# test error in 16 of the 18 cells below batch 128 (where the rules agree) at both budgets, 1.2-1.6
# points on average, and 12 of 21 points on their plateau against 10 (docs/sweeps.md). Linear scaling starved batch 2 (peak lr 0.0016).
DEFAULT_LR_SCALING = "sqrt"
# Not axes of a grid: they pick the data (the split included: one per experiment), the net, the
# seeds (an axis of their own) or where a run trains.
NOT_AXES = ("dataset", "seed", "seeds", "device", "train_limit", "val", "test_limit", "model")
# One-cycle needs this many optimizer steps in all (OneCycleLR divides by zero with fewer warm-up
# steps); a shorter run keeps its lr and momentum constant (train.make_schedule, said in the report).
ONECYCLE_MIN_STEPS = 3
AUTO = "auto"                          # --lr auto: a search per variant on the validation split (lrsearch.py)


def option(default, help: str, parse=None):
    return field(default=default, metadata={"help": help, **({"parse": parse} if parse else {})})


def number_or_auto(text: str):
    """--lr's value: a number, or "auto"."""
    return AUTO if text.strip().lower() == AUTO else float(text)


@dataclass
class TrainConfig:
    """Plain values; every field is a command-line option of the same name."""
    dataset: str = option("fashion-mnist", "cifar10, mnist, fashion-mnist, an image FOLDER (class subfolders) or a FILE.npz")
    epochs: int = option(20, "epochs per run (2 with --quick)")
    batch_size: int = option(128, "training batch size")
    optimizer: str = option("sgd", "sgd (Nesterov momentum) or adamw")
    lr: float | str | None = option(None, "peak learning rate (default 0.1 for sgd, 0.004 for adamw), or auto: "
                                          "searched per variant on the validation split", parse=number_or_auto)
    momentum: float = option(0.9, "SGD momentum (AdamW: beta1); one-cycle cycles it +-0.05 around this value")
    weight_decay: float = option(5e-4, "on conv kernels only")
    trust: float | None = option(None, "sgd: each kernel's gradient rescaled to TRUST x the kernel's norm before the "
                                       "step (a layer-wise trust ratio; 0: plain SGD) (default 0.1 at batch 32 and "
                                       "above, 0 below: docs/sweeps.md)")
    schedule: str = option("onecycle", "onecycle, cosine or constant")
    dropout: float = option(0.0, "channel dropout after each conv block")
    pad: int | None = option(None, "augmentation: each training image shifted by up to PAD pixels (black borders), and "
                                   "mirrored for colour images (default 1 for 28x28 images, 4 from 32x32; 0: no augmentation)")
    seed: int = option(1, "first seed")
    seeds: int = option(1, "train each variant this many times, seeds --seed, --seed+1, ...")
    train_limit: int | None = option(None, "use only the first N training images (10,000 with --quick)")
    val: int | None = option(None, "validation images held out of the training set to choose the epoch and settings "
                                   "(default 5,000 of a 50k+ set, else 10%; 0: none)")
    test_limit: int | None = option(None, "use only the first N test images (2,000 with --quick)")
    device: str = option("auto", "auto (CUDA when there is one), cpu or cuda")
    model: str | None = option(None, "your own net, pkg.module:function taking (norm_layer, in_channels, num_classes)")

    def validate(self) -> None:
        for f in fields(self):               # the library's callers pass anything: seeds="2", epochs=1.5
            value, kinds = getattr(self, f.name), str(f.type).split(" | ")
            if not any(KINDS[kind](value) for kind in kinds):
                raise UserError(f"{f.name}={value!r} is not {' or '.join(KIND_WORDS[k] for k in kinds)}",
                                f"pass e.g. {f.name}={f.default!r}" if f.default is not None else f"pass {f.name} as {KIND_WORDS[kinds[0]]}")
        checks = [
            (self.epochs >= 1, f"--epochs {self.epochs} must be at least 1", "pass e.g. --epochs 20"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1", "pass e.g. --batch-size 128"),
            (self.lr in (None, AUTO) or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0),
             f"--lr {self.lr!r} must be a positive number or auto", "pass e.g. --lr 0.1"),
            (not isinstance(self.lr, (int, float)) or self.lr <= MAX_RATE, f"--lr {self.lr} is above {MAX_RATE:g}",
             "pass e.g. --lr 0.1 (the default peak), or --lr auto"),
            (not (self.lr == AUTO and self.val == 0), "--lr auto chooses on the validation split, and --val 0 turns it off",
             "drop --val 0, or pass a number to --lr"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, f"--weight-decay {self.weight_decay} must not be negative", "pass e.g. --weight-decay 5e-4"),
            (not self.weight_decay > MAX_RATE, f"--weight-decay {self.weight_decay} is above {MAX_RATE:g}", "pass e.g. --weight-decay 5e-4"),
            (self.trust is None or (math.isfinite(self.trust) and self.trust >= 0), f"--trust {self.trust} must not be negative",
             "pass e.g. --trust 0.1, or --trust 0 for plain SGD"),
            (self.trust is None or not self.trust > MAX_RATE, f"--trust {self.trust} is above {MAX_RATE:g}",
             "pass e.g. --trust 0.1, or --trust 0 for plain SGD"),
            (0 <= self.momentum < 1, f"--momentum {self.momentum} must be in [0, 1)", "pass e.g. --momentum 0.9"),
            (0 <= self.dropout < 1, f"--dropout {self.dropout} must be in [0, 1)", "pass e.g. --dropout 0.05"),
            (self.pad is None or 0 <= self.pad <= MAX_PAD, f"--pad {self.pad} must be 0 to {MAX_PAD}", "pass e.g. --pad 1, or --pad 0 for no augmentation"),
            (self.val is None or self.val >= 0, f"--val {self.val} must not be negative", "pass e.g. --val 5000, or --val 0 for no validation split"),
            (self.seeds >= 1, f"--seeds {self.seeds} must be at least 1", "pass e.g. --seeds 3"),
            (0 <= self.seed and self.seed + self.seeds - 1 <= MAX_SEED,
             f"--seed {self.seed} (with --seeds {self.seeds}) is out of range", f"use seeds from 0 to {MAX_SEED}"),
            (self.train_limit is None or self.train_limit >= 1, f"--train-limit {self.train_limit} must be at least 1", "pass e.g. --train-limit 10000"),
            (self.test_limit is None or self.test_limit >= 1, f"--test-limit {self.test_limit} must be at least 1", "pass e.g. --test-limit 2000"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}", f"choose one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}", f"choose one of {', '.join(SCHEDULES)}"),
        ]
        for ok, what, fix in checks:
            if not ok:
                raise UserError(what, fix)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr not in (None, AUTO) else {"sgd": 0.1, "adamw": 0.004}[self.optimizer]

    def momentum_cycle(self) -> tuple[float, float] | None:
        """(high, low) of the one-cycle schedule's momentum, which it moves against the lr
        (high at the start and end, low at the lr's peak); None where it stays at --momentum.

        Symmetric about --momentum, so the run's mean momentum is the one asked for, and at the
        default 0.9 it is PyTorch's own 0.95 -> 0.85 -> 0.95, the recipe measured in
        docs/recipe.md. The swing shrinks near the ends to keep the cycle in [0, 1): none at 0,
        where plain SGD was asked for."""
        swing = min(0.05, self.momentum, (1 - self.momentum) / 2)
        if self.schedule != "onecycle" or swing == 0:
            return None
        return round(self.momentum + swing, 6), round(self.momentum - swing, 6)

    def momentum_text(self) -> str:
        """How the momentum was used, for results.json and the report."""
        cycle = self.momentum_cycle()
        name = "beta1" if self.optimizer == "adamw" else "momentum"
        return f"{name} {self.momentum:g}" if cycle is None else (
            f"{name} {self.momentum:g} cycled {cycle[0]:g} -> {cycle[1]:g} -> {cycle[0]:g} against the lr")

    @property
    def trust_used(self) -> float:
        """--trust, or by default the trust ratio's size measured best for this batch size. Fashion-MNIST
        sweep, 20 epochs on 3,600 images, 3 seeds, pre-0.2 block order (docs/sweeps.md): with it every norm
        lost 6-11 points at batch 2 (bn 24.2% error vs 18.2% without, gn:4 24.6 vs 15.5, ln 26.1 vs
        15.0) and 1-2 at 16; they tie at 32; without it gn:4 and ln fall behind from 64 (at 128:
        19.8 and 25.0 vs 15.9 and 15.5)."""
        if self.trust is not None:
            return self.trust
        return TRUST if self.batch_size >= TRUST_FROM_BATCH else 0.0

    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def to_dict(self) -> dict:
        return asdict(self)


def config_fields() -> list:
    """(name, python type, default, help) of every TrainConfig field, for the command line."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    return [(f.name, f.metadata.get("parse") or kinds[str(f.type).split(" |")[0]], None if f.default is MISSING else f.default, f.metadata.get("help", ""))
            for f in fields(TrainConfig)]


KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "None": "None"}
KINDS = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
         "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
         "str": lambda v: isinstance(v, str), "None": lambda v: v is None}


def saved_config_problem(saved: dict) -> str | None:
    """What makes the training options saved in a results.json unusable (a wrong type, a value
    --lr or --batch-size would refuse), or None; options it does not name keep their defaults."""
    known = {f.name: str(f.type).split(" | ") for f in fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in known}
    for name, value in values.items():
        if not any(KINDS[kind](value) for kind in known[name]):
            return f"config {name} is {value!r}, not {' or '.join(known[name])}"
    try:
        TrainConfig(**values).validate()
    except UserError as e:
        return f"config: {e.what}"
    return None


def parse_value(name: str, text: str):
    """A field's value from text ('0.01' for lr), or a one-line UserError."""
    kind = next((kind for n, kind, _, _ in config_fields() if n == name), None)
    if kind is None:
        raise UserError(f"{name!r} is not a training option", f"sweep one of {', '.join(n for n, *_ in config_fields() if n not in NOT_AXES)}")
    try:
        return kind(text) if kind is not int else int(text, 10)
    except ValueError:
        raise UserError(f"{name} value {text!r} is not {'a whole number' if kind is int else 'a number'}",
                        f"pass e.g. --over {name}=1,2") from None
