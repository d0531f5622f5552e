"""Turning a run folder into figures and a report.

    from normlab.report import plot_curves, plot_misclassified, write_report
    fig = plot_curves(run)                      # matplotlib Figures, for notebooks
    fig = plot_misclassified(run, "gn:4")
    write_report(run)                           # every file, as `normlab report DIR` does (run or sweep)
"""

from importlib import import_module

# Imported on first use: `normlab summary` should not pay for matplotlib.
_EXPORTS = {"plot_curves": ".curves", "plot_misclassified": ".grids", "write_report": ".build",
            "variant_colors": ".style", "variant_title": ".style", "run_findings": ".findings",
            "plot_sweep": ".sweep", "load_sweep": ".sweep"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'normlab.report' has no attribute {name!r}")
