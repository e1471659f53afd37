"""The CAM / ε-map gallery: a finished run's CAMs and the ε-maps they give, on a few test images.

Apart from :mod:`part.analysis.plots` because it loads a model and runs the CAM (torch); the figures of tables
and logs do not need either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from torch import nn

from part.analysis.plots import apply_style, new_figure, save_figure
from part.base.config import RunConfig
from part.evaluation.evaluate import load_run
from part.training.cam import unit_maps
from part.training.importance import eps_map, importance_mask

CAM_NAMES = {"gradcam": "Grad-CAM", "xgradcam": "XGrad-CAM", "layercam": "LayerCAM"}
GALLERY_POOL = 100
"""Gallery images are picked among the first this-many test images (every supported set has more)."""


@dataclass(frozen=True)
class Gallery:
    """What the gallery shows, as arrays: images (n, H, W, C) in [0, 1], unit CAMs and ε-maps (n, H, W)."""
    images: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    cams: np.ndarray
    eps_maps: np.ndarray
    full_share: np.ndarray
    eps: float
    eps_low: float
    cam_method: str
    per_channel: bool
    title: str


def pick_images(labels: torch.Tensor, n: int) -> list[int]:
    """The first image of each class in test order (then the next ones), so the gallery varies."""
    first = list({int(y): i for i, y in reversed(list(enumerate(labels.tolist())))}.values())
    chosen = sorted(first)[:n]
    return chosen + [i for i in range(len(labels)) if i not in chosen][: n - len(chosen)]


def gallery_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, title: str) -> Gallery:
    """CAMs for the predicted class and ε-maps of a batch, with the run's own CAM and importance settings.

    The same package functions as a training refresh (:func:`part.training.cam.unit_maps`,
    :func:`part.training.importance.importance_mask`, :func:`part.training.importance.eps_map`), so the gallery shows
    the budgets the run trained with. A per-channel recipe (official_jet) is shown as its channel mean.
    """
    with torch.no_grad():
        preds = model(x).argmax(1)
    cams = unit_maps(model, x, method=cfg.cam.method, backend=cfg.cam.backend, mode=cfg.cam.resize,
                     normalise=cfg.cam.normalise).float()
    budgets = eps_map(importance_mask(cams, cfg.mask.recipe), cfg.attack.eps, cfg.attack.eps_low)
    full_share = (budgets == cfg.attack.eps).float().mean(dim=(1, 2, 3))  # as part.training.train's full_eps_share
    return Gallery(images=x.permute(0, 2, 3, 1).cpu().numpy(), labels=y.cpu().numpy(), preds=preds.cpu().numpy(),
                   cams=cams.cpu().numpy(), eps_maps=budgets.mean(1).cpu().numpy(),
                   full_share=full_share.cpu().numpy(), eps=cfg.attack.eps,
                   eps_low=cfg.attack.eps_low, cam_method=cfg.cam.method, per_channel=budgets.shape[1] > 1,
                   title=title)


def load_gallery(run_dir: str | Path, n_images: int = 4, label: str | None = None, device: str = "cpu",
                 data_dir: str | Path | None = None) -> Gallery:
    """:func:`gallery_maps` of a finished run on ``n_images`` fixed test images of distinct classes."""
    run = load_run(run_dir, n_examples=GALLERY_POOL, device=device, data_dir=data_dir)
    index = pick_images(run.y.cpu(), n_images)
    cfg = run.cfg
    title = f"{cfg.dataset} ({cfg.model}): {label or cfg.method}, seed {cfg.seed}"
    return gallery_maps(run.model, run.x[index], run.y[index], cfg, title)


def _budget_colours(g: Gallery) -> tuple[Colormap, Normalize]:
    """One colour block per budget level the ε-maps can hold: ε_low and ε, plus the channel means
    (k/3 of the way) of a per-RGB-channel recipe; ticks then sit on block centres."""
    levels = 4 if g.per_channel else 2
    step = (g.eps - g.eps_low) * 255 / (levels - 1)
    half = step / 2 if step > 0 else 0.5
    return colormaps["viridis"].resampled(levels), Normalize(g.eps_low * 255 - half, g.eps * 255 + half)


def gallery_figure(g: Gallery) -> Figure:
    """Images, CAM overlays and ε-maps (in 1/255, with a colourbar), one column per image.

    Pixels are drawn as blocks (nearest neighbour), so an 8×8 digit shows its real resolution and
    each ε-map pixel its own budget.
    """
    apply_style()
    n = len(g.images)
    fig = new_figure(figsize=(2.0 * n + 1.6, 6.6))
    axes = fig.subplots(3, n, squeeze=False)
    grey = g.images.shape[-1] == 1
    cam_name = CAM_NAMES.get(g.cam_method, g.cam_method)
    budget_cmap, budget_norm = _budget_colours(g)
    for i in range(n):
        image = g.images[i, ..., 0] if grey else g.images[i]
        axes[0, i].imshow(image, interpolation="nearest", **({"cmap": "gray", "vmin": 0, "vmax": 1} if grey else {}))
        axes[0, i].set_title(f"label {g.labels[i]}, pred. {g.preds[i]}", fontsize=10)
        # The CAM lies on a grey copy of the image, so its colours are not mixed with the image's.
        axes[1, i].imshow(image if grey else image.mean(-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, i].imshow(g.cams[i], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
        budget = axes[2, i].imshow(g.eps_maps[i] * 255, cmap=budget_cmap, norm=budget_norm, interpolation="nearest")
        budget.set_gid("eps_map")
        unit = "entries" if g.per_channel else "pixels"
        axes[2, i].set_xlabel(f"full ε: {100 * g.full_share[i]:.0f}% of {unit}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 0].set_ylabel("test image")
    axes[1, 0].set_ylabel(f"{cam_name}\n(predicted class)")
    axes[2, 0].set_ylabel("ε-map" + ("\n(mean over RGB)" if g.per_channel else ""))
    # The CAM bar shows the colour map unblended: the overlay's alpha would wash it out.
    fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes[1, :], shrink=0.9, label="CAM (0–1)")
    bar = fig.colorbar(budget, ax=axes[2, :], shrink=0.9, label="budget (/255)")
    bar.set_ticks([g.eps_low * 255, g.eps * 255], labels=[f"ε_low = {g.eps_low * 255:g}", f"ε = {g.eps * 255:g}"])
    fig.suptitle(f"CAM and ε-map: {g.title}")
    return fig


def plot_gallery(run_dir: str | Path, stem: str | Path, n_images: int = 4, label: str | None = None,
                 device: str = "cpu", data_dir: str | Path | None = None) -> list[Path]:
    """:func:`gallery_figure` of a finished run, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(gallery_figure(load_gallery(run_dir, n_images, label, device, data_dir)), stem)
