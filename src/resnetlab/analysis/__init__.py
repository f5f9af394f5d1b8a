"""Analysis: figures and studies of trained networks.

``gradflow`` (gradient norms, activation scales, branch/skip ratios), ``lesion`` (Veit et al.
2016 block removal), ``gradcam`` (Grad-CAM and saliency through captum), ``studies`` (whole
studies written to a folder), ``report`` (one self-contained HTML page) and ``runs`` (the one
place that reads run directories).  Import those submodules directly.

Importing this package is cheap: matplotlib is imported only when a plot is drawn
(``resnetlab.analysis.plots`` is the one module that uses it).
"""

from resnetlab.analysis.plots import plot_confusion, plot_curves, read_metrics

__all__ = ["plot_confusion", "plot_curves", "read_metrics"]
