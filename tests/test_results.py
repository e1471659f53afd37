"""part.evaluation.results' per-example merge, on flags written by hand: the worst case is correct under every attack,
over the examples every attack has seen (AutoAttack often runs on a prefix of the test split)."""

from __future__ import annotations

import numpy as np

from part.evaluation.results import worst_case_correct


def test_the_worst_case_is_every_attack_on_the_examples_all_have_seen(tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    flags = {"natural": [1, 1, 1, 0, 1, 1], "pgd20": [1, 0, 1, 0, 1, 0], "aa": [1, 1, 0, 0]}  # aa on 4 of 6
    for name, correct in flags.items():
        np.savez(eval_dir / f"{name}.correct.npz", correct=np.array(correct, dtype=bool),
                 index=np.arange(len(correct)))
    survivors, common = worst_case_correct(tmp_path, list(flags))
    assert common.tolist() == [0, 1, 2, 3]
    # example by example: 0 survives all three; 1 falls to pgd20, 2 to aa, 3 to natural
    assert survivors.tolist() == [True, False, False, False]
    survivors, common = worst_case_correct(tmp_path, ["natural", "pgd20"])
    assert common.tolist() == list(range(6)) and survivors.tolist() == [True, False, True, False, True, False]
