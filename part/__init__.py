"""PART: Pixel-reweighted Adversarial Training (Zhang et al., ICML 2024), reproduced.

The engine behind the workflow: models, datasets, attacks, batched CAMs, the per-pixel
ε-map and training for AT / TRADES / MART and their PART variants.
"""

__version__ = "0.1.0"
