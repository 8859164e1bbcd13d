"""Where a Vision Transformer looks: per-head attention and rollout overlaid on the image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["image_attention_figure"]


def image_attention_figure(
    image: Tensor,
    heads: Tensor,
    rollout: Tensor,
    *,
    title: str = "",
    ink: bool = False,
    alpha: float = 0.55,
    dpi: float = 100,
) -> Figure:
    """One row: the image, each head's attention overlaid on it, and the rollout overlaid.

    Args:
        image: the image as the model saw it, float in [0, 1].
        heads: one attention map per head, upsampled to the image size, scaled to max 1.
        rollout: the attention rollout over all layers, likewise.
        title: the figure's title.
        ink: grey images hold ink as high values (digits): draw them dark on white.
        alpha: opacity of the heat overlay.
        dpi: figure resolution.

    Returns:
        a matplotlib ``Figure`` (object API, no display needed); save it with
        :func:`attnkit.viz.heatmaps.save_figure`.

    Shapes:
        image (C, H, W) with C 1 or 3 (or more: the first 3 are shown); heads (K, H, W);
        rollout (H, W).
    """
    from matplotlib.figure import Figure

    image = image.clamp(0, 1)
    num_heads = heads.shape[0]
    fig = Figure(figsize=(1.6 * (num_heads + 2), 2.0), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, num_heads + 2, squeeze=False)[0]
    if image.shape[0] == 1:
        shown, cmap = image[0].numpy(), ("gray_r" if ink else "gray")
    else:
        shown, cmap = image[:3].permute(1, 2, 0).numpy(), None  # (H, W, 3)
    panels = [
        ("input", None),
        *((f"head {h + 1}", heads[h]) for h in range(num_heads)),
        ("rollout", rollout),
    ]
    for ax, (name, heat) in zip(axes, panels, strict=True):
        ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        if heat is not None:
            ax.imshow(
                heat.numpy(),
                cmap="inferno",
                alpha=alpha,
                vmin=0.0,
                vmax=1.0,
                interpolation="bilinear",
            )
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
