"""Evaluation of trained runs: the attacks' per-example results, the robustness curve, the sanity
checks, and the results on disk."""
