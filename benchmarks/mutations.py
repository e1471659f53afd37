"""Mutation check: does each core formula and invariant have a test that fails when it is wrong?

    python benchmarks/mutations.py [--only ID ...] [--list]

Each entry of :data:`MUTATIONS` changes one line of ``part/`` — a KL's direction, a standard deviation's
degrees of freedom, an interval's end, a lock's lease — in a temporary copy of the working tree (the real
files are never edited), and runs the tests of the mutated module only, ``pytest -x -q`` on the narrowest
selection that ought to catch it, with ``PYTHONPATH`` at the copy (so the subprocesses those tests start import
the mutant too). A mutation is *killed* when that selection fails and *survived* when it passes: a survivor is
a formula no test pins. The unmutated tree must pass every selection first (``baseline``), else a "kill" would
be the selection's own failure. Prints a table (mutation, verdict, seconds) and then one JSON object.

A mutation whose line is not found exactly once is an error, not a skip: the list must follow the code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("part", "tests", "benchmarks", "configs", "pyproject.toml", "config.yaml")
"""What the tests read from the tree: the package, the tests and their conftest, the benchmarks some import,
the shipped configs, pytest's settings."""


@dataclass(frozen=True)
class Mutation:
    id: str
    path: str  # relative to the tree
    old: str  # found exactly once; may carry context lines, but only one line changes
    new: str
    tests: tuple[str, ...]  # pytest arguments: the module's tests, narrowed with -k where they are slow


def _t(module: str, k: str | None = None) -> tuple[str, ...]:
    return (f"tests/{module}",) if k is None else (f"tests/{module}", "-k", k)


LOSSES = _t("test_methods.py")
STATS = _t("test_stats.py", "placed or interval_end or p_value_is or one_sided or hand_made")
MUTATIONS = [
    # importance: z > 1 with the population std of the squared map
    Mutation("importance.sample_std", "part/training/importance.py", "std = values.std(dim=dims, correction=0, keepdim=True)",
             "std = values.std(dim=dims, correction=1, keepdim=True)", _t("test_importance.py")),
    Mutation("importance.threshold", "part/training/importance.py", "return ((values - mean) / std > 1) & varies",
             "return ((values - mean) / std > 0.5) & varies", _t("test_importance.py")),
    Mutation("importance.no_square", "part/training/importance.py", "squared = unit_map.square()", "squared = unit_map",
             _t("test_importance.py")),
    # ε-maps: ε on the important pixels, paired with their image through the batch's crop and flip
    Mutation("epsmap.budgets_swapped", "part/training/importance.py", "torch.where(mask, float(eps), float(eps_low))",
             "torch.where(mask, float(eps_low), float(eps))", _t("test_importance.py")),
    Mutation("epsmap.own_pairing_unaugmented", "part/training/epsmap.py",
             "mask = batch.augmentation(self.masks[batch.index], fill=False)", "mask = self.masks[batch.index]",
             _t("test_epsmap.py")),
    Mutation("epsmap.batch_index_by_image", "part/training/epsmap.py", "mask = self.masks[batch.position]",
             "mask = self.masks[batch.index]", _t("test_epsmap.py")),
    # projection and step
    Mutation("attacks.no_box", "part/attacks/pgd.py", "return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)",
             "return torch.min(torch.max(x_adv, x - eps), x + eps)", _t("test_attacks.py")),
    Mutation("attacks.ball_too_wide", "part/attacks/pgd.py", "torch.min(torch.max(x_adv, x - eps), x + eps)",
             "torch.min(torch.max(x_adv, x - 2 * eps), x + eps)", _t("test_attacks.py")),
    Mutation("attacks.descent_step", "part/attacks/pgd.py", "x_adv.detach() + alpha * grad.sign()",
             "x_adv.detach() - alpha * grad.sign()", _t("test_attacks.py")),
    # the four outer losses
    Mutation("loss.natural_smoothed", "part/training/methods.py", "return F.cross_entropy(logits, y), logits",
             "return F.cross_entropy(logits, y, label_smoothing=0.1), logits", LOSSES),
    Mutation("loss.at_on_natural", "part/training/methods.py", "return F.cross_entropy(logits_adv, y), logits_adv",
             "return F.cross_entropy(model(x).float(), y), logits_adv", LOSSES),
    Mutation("loss.trades_kl_swapped", "part/training/methods.py",
             "F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(target, dim=1)",
             "F.kl_div(F.log_softmax(target, dim=1), F.softmax(logits_adv, dim=1)", LOSSES),
    Mutation("loss.trades_mean_over_classes", "part/training/methods.py", 'F.softmax(target, dim=1), reduction="batchmean")',
             'F.softmax(target, dim=1), reduction="mean")', LOSSES),
    Mutation("loss.trades_ce_on_adversarial", "part/training/methods.py", "return F.cross_entropy(logits, y) + beta * robust",
             "return F.cross_entropy(logits_adv, y) + beta * robust", LOSSES),
    Mutation("loss.mart_kl_swapped", "part/training/methods.py", "F.kl_div(torch.log(p_adv + 1e-12), p_nat,",
             "F.kl_div(torch.log(p_nat + 1e-12), p_adv,", LOSSES),
    Mutation("loss.mart_weight_p_true", "part/training/methods.py", "(kl * (1.0000001 - p_true)).mean()",
             "(kl * p_true).mean()", LOSSES),
    Mutation("loss.mart_runner_up", "part/training/methods.py",
             "runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])", "runner_up = top2[:, -2]", LOSSES),
    # the refresh schedule and resume
    Mutation("schedule.every_s_from_the_first", "part/base/config.py",
             "return part_epoch == 1 or part_epoch % self.mask.refresh_every == 0",
             "return (part_epoch - 1) % self.mask.refresh_every == 0", _t("test_config.py", "refresh")),
    Mutation("resume.maps_recomputed", "part/training/train.py", 'engine.store.masks = state["masks"]',
             'engine.store.refresh(engine.model, engine.loader, state["epoch"], engine.autocast)',
             _t("test_train.py", "resumed_epochs_use_the_maps")),
    # intervals, verdicts, p-values, Holm
    Mutation("stats.one_sided_quantile", "part/analysis/stats.py", "se, t = _quantile(est.pieces(**design), (1 + confidence) / 2)",
             "se, t = _quantile(est.pieces(**design), confidence)", STATS),
    Mutation("stats.welch_df", "part/analysis/stats.py", "return [(self.std ** 2 / n, n - 1), (self.base_std ** 2 / n, n - 1)]",
             "return [(self.std ** 2 / n, n), (self.base_std ** 2 / n, n)]", STATS),
    Mutation("stats.p_normal_not_t", "part/analysis/stats.py", "return float(st.t.sf((est.mean - threshold) / se, df))",
             "return float(st.norm.sf((est.mean - threshold) / se))", STATS),
    Mutation("verdict.natural_on_upper_end", "part/analysis/compare.py", "else (low > self.threshold + eps):",
             "else (high > self.threshold + eps):", STATS),
    Mutation("verdict.aa_fails_on_its_threshold", "part/analysis/compare.py", "if (high < self.threshold - eps) if self.inclusive",
             "if (high < self.threshold + eps) if self.inclusive", STATS),
    Mutation("verdict.aa_threshold_excluded", "part/analysis/compare.py",
             'Criterion("Δ AA", "aa", -self.aa_tolerance, True)', 'Criterion("Δ AA", "aa", -self.aa_tolerance, False)',
             STATS),
    Mutation("verdict.p_of_the_stronger_criterion", "part/analysis/compare.py", "return max(stats.p_above(estimates[c.attack]",
             "return min(stats.p_above(estimates[c.attack]", STATS),
    Mutation("holm.no_running_max", "part/analysis/stats.py",
             "np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)",
             "np.minimum((m - np.arange(m)) * p[order], 1.0)", _t("test_stats.py", "holm")),
    Mutation("holm.bonferroni", "part/analysis/stats.py", "np.maximum.accumulate((m - np.arange(m)) * p[order])",
             "np.maximum.accumulate(m * p[order])", _t("test_stats.py", "holm")),
    # atomic writes, locks, the per-example merge
    Mutation("files.write_in_place", "part/base/files.py", "        write(tmp)\n", "        write(path)\n",
             _t("test_faults.py", "failing_writer or killed_writer")),
    Mutation("files.temporary_kept_on_error", "part/base/files.py", "tmp.unlink(missing_ok=True)", "pass",
             _t("test_faults.py", "failing_writer")),
    Mutation("lock.lease_reversed", "part/base/lock.py", 'if (late := time.time() - renewed) > holder["lease_seconds"]:',
             'if (late := time.time() - renewed) < holder["lease_seconds"]:', _t("test_locks.py", "without_a_record")),
    Mutation("lock.dead_holder_alive", "part/base/lock.py", "except ProcessLookupError:\n        return False",
             "except ProcessLookupError:\n        return True", _t("test_locks.py", "dead_holders_lock")),
    Mutation("lock.never_renewed", "part/base/lock.py", "            _write(self.fd, self.record)\n", "            pass\n",
             _t("test_locks.py", "renews")),
    Mutation("merge.any_attack_survives", "part/evaluation/results.py",
             "return np.logical_and.reduce([c[np.isin(index, common)]", "return np.logical_or.reduce([c[np.isin(index, common)]",
             _t("test_results.py")),
    Mutation("merge.union_of_examples", "part/evaluation/results.py", "common = functools.reduce(np.intersect1d,",
             "common = functools.reduce(np.union1d,", _t("test_results.py")),
]


def copy_tree(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    """(passed, seconds, output) of ``pytest -x -q tests`` in ``tree`` with ``tree`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=tree, env=env, capture_output=True, text=True)
    return proc.returncode == 0, time.perf_counter() - start, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    """The test that killed a mutant (pytest's short summary) and the first line of why (its ``E`` lines)."""
    lines = output.splitlines()
    test = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), "")
    why = next((line[1:].strip() for line in lines if line.startswith("E ")), "")
    return f"{test} · {why}"[:300]


def apply(tree: Path, m: Mutation) -> str:
    """Write the mutant into ``tree``; returns the original text to restore."""
    target = tree / m.path
    text = target.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutation {m.id}: {m.old!r} occurs {text.count(m.old)} times in {m.path} (expected once): "
                         "update benchmarks/mutations.py to the code")
    target.write_text(text.replace(m.old, m.new))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"--only: unknown ids {sorted(set(args.only) - {m.id for m in MUTATIONS})}")
    if args.list:
        print("\n".join(f"{m.id}: {m.path} · {' '.join(m.tests)}" for m in chosen))
        return 0
    start = time.perf_counter()
    results, baseline = [], {}
    with tempfile.TemporaryDirectory(prefix="part-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for tests in dict.fromkeys(m.tests for m in chosen):  # each selection once, unmutated
            passed, seconds, tail = run_tests(tree, tests)
            baseline[" ".join(tests)] = {"passed": passed, "seconds": round(seconds, 1)}
            if not passed:
                print(f"baseline fails: {' '.join(tests)}\n{tail[-2000:]}", file=sys.stderr)
                print(json.dumps({"baseline": baseline, "error": "a selection fails unmutated"}, indent=1))
                return 1
        for m in chosen:
            original = apply(tree, m)
            try:
                passed, seconds, tail = run_tests(tree, m.tests)
            finally:
                (tree / m.path).write_text(original)
            verdict = "survived" if passed else "killed"
            results.append({"id": m.id, "file": m.path, "tests": " ".join(m.tests), "verdict": verdict,
                            "seconds": round(seconds, 1), "failed": "" if passed else first_failure(tail)})
            print(f"{m.id:38s} {verdict:8s} {seconds:6.1f} s  {' '.join(m.tests)}", file=sys.stderr, flush=True)
    survived = [r["id"] for r in results if r["verdict"] == "survived"]
    print(json.dumps({"mutations": results, "killed": len(results) - len(survived), "survived": survived,
                      "baseline": baseline, "seconds": round(time.perf_counter() - start, 1)}, indent=1, ensure_ascii=False))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
