"""Analysis: figures and studies of trained networks.

Importing this package is cheap: matplotlib is imported only when a plot is drawn
(``resnetlab.analysis.plots`` is the one module that uses it).
"""

from resnetlab.analysis.plots import plot_confusion, plot_curves, read_metrics

__all__ = ["plot_confusion", "plot_curves", "read_metrics"]
