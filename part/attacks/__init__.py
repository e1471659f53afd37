"""The ℓ∞ attacks behind one interface, the ones training and evaluation both use, and the
evaluation's attack suite as data with per-example correctness under one of its attacks."""
