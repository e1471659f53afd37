"""PIL's bicubic resize of float images, as two small matrices applied to a whole batch on the device.

The authors' release upsamples every unit CAM (4×4 for ResNet-18 on CIFAR, 8×8 for WRN-34-10) with
``PIL.Image.resize(..., BICUBIC)`` on a float ('F' mode) image, one image at a time on the CPU. Its
kernel differs from torch's bicubic: Keys' cubic with a = −0.5 (torch: −0.75), the weights of each
output pixel renormalised to sum to one where the kernel leaves the image (torch: border
replication), and no clamp, so the output overshoots [0, 1] and is standardised as it is. Those
differences alone flip about 3 % of the release's ε-map entries.

For a fixed (h, w) → (H, W) the resize is linear and separable: ``out = R_H · m · R_Wᵀ``, with the
rows of ``R`` the normalised kernel weights Pillow computes (``precompute_coeffs`` in its
``Resample.c``). Pillow resizes horizontally first and stores the intermediate image in float32;
so does :func:`pil_bicubic_resize`.
"""

from __future__ import annotations

import functools
import math

import torch

_A = -0.5  # Pillow's bicubic_filter
_SUPPORT = 2.0


def _cubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((_A + 2.0) * x - (_A + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * _A
    return 0.0


@functools.lru_cache(maxsize=None)
def _weights(in_size: int, out_size: int) -> tuple[tuple[float, ...], ...]:
    """Pillow's resampling weights, one row of ``in_size`` per output pixel (float64, as Pillow's)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)  # downscaling widens the kernel
    support = _SUPPORT * filter_scale
    rows = []
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(math.trunc(center - support + 0.5), 0)  # C's (int) cast truncates toward zero
        hi = min(math.trunc(center + support + 0.5), in_size)
        k = [_cubic((i - center + 0.5) / filter_scale) for i in range(lo, hi)]
        total = sum(k)
        row = [0.0] * in_size
        for i, w in zip(range(lo, hi), k):
            row[i] = w / total if total != 0.0 else w
        rows.append(tuple(row))
    return tuple(rows)


def pil_bicubic_matrix(in_size: int, out_size: int, dtype: torch.dtype = torch.float64,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """The (out_size, in_size) matrix of PIL's bicubic resize along one axis."""
    return torch.tensor(_weights(in_size, out_size), dtype=dtype, device=device)


def pil_bicubic_resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, h, w) float maps to (B, *size) as ``Image.fromarray(m, 'F').resize(size[::-1], BICUBIC)``.

    Horizontal pass first, intermediate rounded to float32, then the vertical pass: Pillow's order
    and precision. The result is float32; it is not clamped.
    """
    h, w = maps.shape[-2:]
    out_h, out_w = size
    maps = maps.double()
    cols = pil_bicubic_matrix(w, out_w, device=maps.device)
    rows = pil_bicubic_matrix(h, out_h, device=maps.device)
    horizontal = (maps @ cols.T).float().double() if out_w != w else maps
    vertical = rows @ horizontal if out_h != h else horizontal
    return vertical.float()
