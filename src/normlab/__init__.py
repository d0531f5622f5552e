"""normlab: how normalization layers change how a small CNN trains.

    from normlab import Variant, build_model, load_dataset, load_run
    from normlab import plot_curves, plot_misclassified, write_report
    from normlab import compare_pairs, load_sweep, plot_sweep, preprocess
"""

from importlib import import_module

__version__ = "0.1.0"

# Imported on first use, so `normlab --help` and input errors answer without loading PyTorch.
_EXPORTS = {"Variant": ".variants", "build_model": ".models", "load_dataset": ".data", "load_run": ".runs",
            "TrainConfig": ".train", "plot_curves": ".report.curves", "plot_misclassified": ".report.grids",
            "write_report": ".report.build", "compare_pairs": ".stats", "plot_sweep": ".report.sweep",
            "load_sweep": ".report.sweep", "preprocess": ".data.batches"}
__all__ = [*_EXPORTS, "__version__"]


def __dir__():
    # The public API, not this module's few internals (dir() would otherwise list only import_module).
    return sorted(__all__)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'normlab' has no attribute {name!r}")
