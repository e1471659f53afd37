"""From unit CAMs to PART's per-pixel ε budget: important pixels keep ε, the rest get ε_low.

A pixel is important when its (transformed) CAM value lies more than one standard deviation above
its image's mean. Two recipes say what is standardised:

* ``"default"``: the squared unit map, one channel: the paper's rule without the release's
  detour through a colour map;
* ``"official_jet"``: what the authors' release (JiachengZ01/PART, ``utils.craft_weight_matrix``
  and ``process_overlay``) does: the squared map is rendered with matplotlib's *jet* colour map
  and the RGB image is standardised, giving one mask per colour channel (so the three channels of
  a pixel can get different budgets). The release takes ONE mean and ONE standard deviation over
  the whole H×W×3 array (``np.mean``/``np.std``), not per channel, and so does this recipe.

Both use the population standard deviation (``np.std``'s ddof=0, as in the release). A constant
map has no pixel above its mean; it yields no important pixel rather than a 0/0.

The ``quadrant_*`` recipes need no CAM: they are the paper's proof of concept (its Figure 1), AT
whose budget is ε_low on one fixed quadrant of the input (``ul``, ``ur``, ``bl``, ``br``) and ε on
the other three, to show that *where* the budget is spent matters.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from part.base import vocabulary

RECIPES = vocabulary.CAM_RECIPES
"""The CAM-based recipes."""

QUADRANTS = dict(zip(vocabulary.QUADRANT_RECIPES, ((0, 0), (0, 1), (1, 0), (1, 1))))
"""The fixed-region recipes: (row half, column half) of the quadrant that gets ε_low."""


@functools.lru_cache(maxsize=None)
def _jet_lut(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """jet's RGB table laid out as matplotlib's: N colours, then the under, over and bad colours."""
    import matplotlib  # only the release's recipe needs it; importing it costs every job a second

    cmap = matplotlib.colormaps["jet"]
    rows = np.concatenate([cmap(np.arange(cmap.N)), [cmap.get_under(), cmap.get_over(), cmap.get_bad()]])
    return torch.tensor(rows[:, :3], dtype=dtype, device=device)


def jet_rgb(values: torch.Tensor) -> torch.Tensor:
    """``matplotlib.colormaps["jet"](values)[..., :3]`` on the tensor's device: shape (..., 3).

    The index follows matplotlib's Colormap rule for float input: ``int(v * N)`` with v == 1 mapped
    to the last colour, negatives to the under colour, ``v * N >= N`` to the over colour and NaN to
    the bad colour; ``v * N`` is formed in the input's dtype, as matplotlib does.
    """
    lut = _jet_lut(values.device, values.dtype)
    n = lut.shape[0] - 3
    scaled = values * n
    scaled = torch.where(scaled == n, torch.full_like(scaled, n - 1), scaled)
    index = scaled.nan_to_num(0.0).clamp(0, n - 1).long()
    index = torch.where(scaled < 0, n, index)
    index = torch.where(scaled >= n, n + 1, index)
    index = torch.where(scaled.isnan(), n + 2, index)
    return lut[index]


def _above_one_std(values: torch.Tensor) -> torch.Tensor:
    """z > 1 with z standardised over all of each image's entries (dims 1..3)."""
    dims = (1, 2, 3)
    mean = values.mean(dim=dims, keepdim=True)
    std = values.std(dim=dims, correction=0, keepdim=True)
    varies = values.amax(dim=dims, keepdim=True) > values.amin(dim=dims, keepdim=True)
    return ((values - mean) / std > 1) & varies


def importance_mask(unit_map: torch.Tensor, recipe: str = "default") -> torch.Tensor:
    """Boolean importance of each pixel: (B, 1, H, W) for "default", (B, 3, H, W) for "official_jet".

    ``unit_map`` holds per-image CAMs in [0, 1] at input size, (B, H, W), as from ``unit_maps``.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown importance recipe {recipe!r}; expected one of {', '.join(map(repr, RECIPES))}")
    if unit_map.dim() != 3:
        raise ValueError(f"expected unit maps of shape (B, H, W), got {tuple(unit_map.shape)}")
    squared = unit_map.square()
    if recipe == "default":
        return _above_one_std(squared[:, None])
    return _above_one_std(jet_rgb(squared).permute(0, 3, 1, 2))


def quadrant_mask(height: int, width: int, recipe: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Importance (1, 1, H, W) of the ``quadrant_*`` recipe: False on its low quadrant, True elsewhere.

    An odd size splits as ``numpy.array_split`` does: the upper (left) half gets the middle row
    (column), so a 7-pixel side splits 4 + 3 — one rule for every size, stated once.
    """
    if recipe not in QUADRANTS:
        raise ValueError(f"unknown quadrant recipe {recipe!r}; expected one of {', '.join(map(repr, QUADRANTS))}")
    row_half, col_half = QUADRANTS[recipe]
    rows = (torch.arange(height, device=device) >= (height + 1) // 2) == bool(row_half)
    cols = (torch.arange(width, device=device) >= (width + 1) // 2) == bool(col_half)
    return ~(rows[:, None] & cols[None, :])[None, None]


def eps_map(mask: torch.Tensor, eps: float, eps_low: float) -> torch.Tensor:
    """The per-entry budget, float32 with ``mask``'s shape: ε where important, ε_low elsewhere.

    The budgets go in as Python scalars: a tensor made from them would be a host-to-device copy per batch.
    """
    return torch.where(mask, float(eps), float(eps_low)).float()

