"""attnkit.viz: attention heatmaps and training curves (matplotlib imported lazily, headless)."""

from attnkit.viz.curves import plot_curves, read_metrics
from attnkit.viz.heatmaps import attention_grid, save_figure, show_heatmaps

__all__ = ["attention_grid", "plot_curves", "read_metrics", "save_figure", "show_heatmaps"]
