"""normlab: how normalization layers change how a small CNN trains.

    from normlab import Variant, build_model, convert, register_norm, load_dataset, load_run
    from normlab import plot_curves, plot_misclassified, write_report
    from normlab import compare_pairs, plot_sweep, preprocess
    run = normlab.compare(dataset="fashion-mnist", norms="bn,gn:4", epochs=3, out="runs/x")   # also train, sweep
    except normlab.UserError as e: ...      # bad input: e.what is wrong, e.fix says how to fix it
"""

import sys
from importlib import import_module
from types import ModuleType

__version__ = "0.2.0"

# Imported on first use, so `normlab --help` and input errors answer without loading PyTorch.
_EXPORTS = {"Variant": ".variants", "build_model": ".models", "convert": ".models",
            "register_norm": ".norms", "load_dataset": ".data", "load_run": ".runs",
            "TrainConfig": ".config", "plot_curves": ".report.curves", "plot_misclassified": ".report.grids",
            "write_report": ".report.build", "compare_pairs": ".stats", "plot_sweep": ".report.sweep",
            "preprocess": ".data.batches", "compare": ".api", "train": ".api", "sweep": ".api",
            "UserError": ".errors"}        # what every refused input raises: one line, what and how to fix
__all__ = [*_EXPORTS, "__version__"]


def __dir__():
    # The public API, not this module's few internals (dir() would otherwise list only import_module).
    return sorted(__all__)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'normlab' has no attribute {name!r}")


class _Package(ModuleType):
    """``normlab.train`` is the library function, not the module train.py: importing a submodule
    sets it as an attribute of its package, which would hide the function after the first run.
    The module stays importable (``from normlab.train import train_run``, sys.modules)."""

    def __setattr__(self, name, value):
        if not (isinstance(value, ModuleType) and _EXPORTS.get(name) == ".api"):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
