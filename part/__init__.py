"""PART: Pixel-reweighted Adversarial Training (Zhang et al., ICML 2024), reproduced.

The engine behind the workflow: models, datasets, attacks, batched CAMs, the per-pixel
ε-map and training for AT / TRADES / MART and their PART variants, evaluation and the tables.
Its folders are the pipeline's stages, each importing only from the ones below it: the command line,
``workflow``, ``analysis``, ``evaluation``, ``training``, then ``attacks``, ``models`` and ``data``, then
``base`` (docs/engine.md, tests/test_layers.py).
"""

__version__ = "0.1.0"
