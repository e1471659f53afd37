"""``part`` command line: ``part prepare``, ``part train``, ``part evaluate``, ``part tables``, ``part plan``,
``part status``, ``part tensorboard``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from part.base.config import ConfigError, parse_yaml, read_yaml
from part.base.errors import DivergenceError, echo
from part.base.lock import Locked
from part.base.vocabulary import CHECKPOINTS, PRECISIONS


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``a.b=value`` pairs (values parsed as YAML) to a nested dict; a pair that is not one, a value that is not
    YAML, or two pairs that disagree on whether a key is a mapping (``epochs=3``, ``epochs.x=1``) is refused."""
    out: dict[str, Any] = {}
    for pair in pairs:
        flag = f"--set {echo(pair)}"
        key, sep, value = pair.partition("=")
        *parents, leaf = key.split(".")
        if not sep or not all(p.strip() for p in key.split(".")):
            raise ConfigError(f"{flag}: expected KEY=VALUE with a dotted key, e.g. --set attack.steps=5")
        node = out
        for depth, p in enumerate(parents, 1):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{flag}: an earlier --set gave key {echo('.'.join(parents[:depth]))} the value "
                                  f"{echo(node)}, so {echo(key)} cannot index into it; expected one of the two")
        if isinstance(node.get(leaf), dict):
            raise ConfigError(f"{flag}: an earlier --set gave keys below {echo(key)}, so it cannot be a single value "
                              "too; expected one of the two")
        node[leaf] = parse_yaml(value, flag)
    return out


def _path(value: str) -> str:
    """A directory argument: an empty one would silently mean the working directory (or the default)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: an empty path; expected a directory")
    return value


def _whole(minimum: int, maximum: int = 2**32 - 1):
    """An argparse type: a whole number in [minimum, maximum] (a seed numpy accepts, a count of at least 1)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not minimum <= number <= maximum:
            raise argparse.ArgumentTypeError(f"got {echo(value)}, expected a whole number from {minimum} to {maximum}")
        return number
    return parse


def cmd_prepare(args: argparse.Namespace) -> None:
    from part.data.sources import fetch_and_prepare

    path = fetch_and_prepare(args.dataset, Path(args.raw_dir) / args.dataset, Path(args.out) / f"{args.dataset}.pt",
                             mirror=args.mirror, split_seed=args.split_seed)
    print(f"[part] wrote {path}")


def cmd_train(args: argparse.Namespace) -> None:
    """Train in this process or, launched by torchrun (WORLD_SIZE > 1), as one of its processes."""
    from part.base import config
    from part.base.runtime import config_device
    from part.training import distributed
    from part.training.train import train

    distributed.exit_on_sigterm()
    cfg = config.load(args.config, _overrides(args.set))
    with distributed.process_group(config_device(cfg)):
        train(cfg, args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from part.base.rundir import metrics_name
    from part.evaluation.evaluate import evaluate
    from part.evaluation.results import merge_metrics
    from part.training import distributed

    distributed.exit_on_sigterm()  # a stopped evaluation removes its locks
    if args.merge_only:
        metrics = merge_metrics(args.run, args.checkpoint)
    else:
        attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
        metrics = evaluate(args.run, attacks, n_examples=args.n_examples, batch_size=args.batch_size,
                           device=args.device, precision=args.precision, seed=args.seed, data_dir=args.data_dir,
                           merge=not args.no_merge, checkpoint=args.checkpoint)
    if "attacks" not in metrics:  # only checks (curve, sanity): evaluate() has logged them
        return
    cells = [f"{name} {e['accuracy']:.2f}% (n={e['n_examples']}, {e['seconds']:.1f}s)"
             for name, e in metrics["attacks"].items()]
    worst = metrics["worst_case"]
    print(f"[part] {args.run}: " + " | ".join(cells) + f" | worst case {worst['accuracy']:.2f}% "
          f"(n={worst['n_examples']})" + ("" if args.no_merge else f" -> {metrics_name(args.checkpoint)}"))


def cmd_tables(args: argparse.Namespace) -> None:
    """The main table and every experiment's, of whatever part of a grid has been evaluated, laid out as the
    workflow lays them out below the results directory (or ``--out``)."""
    from part.analysis import aggregate, experiments
    from part.base import grid

    g = grid.load(read_yaml(args.configfile, "workflow config"), source=args.configfile)
    out = Path(args.out) if args.out else g.results_dir
    metrics = aggregate.existing_metrics(g)
    print(f"[part] main table: {len(metrics)}/{len(g.main)} runs evaluated")
    if metrics:
        for path in aggregate.write_tables(g, metrics, grid.table_outputs(out)["main_csv"].parent).values():
            print(f"[part] wrote {path}")
    for name, runs in g.experiment_runs.items():
        found = aggregate.existing_metrics(g, runs)
        print(f"[part] experiment {name}: {len(found)}/{len(runs)} runs evaluated")
        if found:
            for path in experiments.write(g, name, found, g.existing("log.jsonl", runs), out).values():
                print(f"[part] wrote {path}")


def cmd_plan(args: argparse.Namespace) -> None:
    """A grid's jobs and device-hours per dataset and stage, from its runs so far and throughput files; runs nothing."""
    from part.base import grid
    from part.workflow import plan

    cfg = read_yaml(args.configfile, "workflow config")
    if args.workflow_profile:
        cfg = plan.with_profile(cfg, args.workflow_profile)
    g = grid.load(cfg, source=args.configfile)
    throughput = [plan.load_throughput(path) for path in args.throughput]
    for warning in plan.check_files(g, throughput):
        print(f"part plan: warning: {warning}", file=sys.stderr)
    estimate = plan.shipped_estimate()
    rows = plan.plan(g, throughput, estimate)
    print((plan.markdown if args.markdown else plan.text)(rows), end="")
    used = [estimate] if any(r.source == estimate.label for r in rows) else []
    print(plan.legend([*throughput, *used]))
    print(plan.summary(rows))


def cmd_status(args: argparse.Namespace) -> None:
    """Where every run of the grid stands, from its files (no torch); ``--watch N`` redraws every N seconds."""
    import json
    import time

    from part.base import grid
    from part.workflow import plan, status

    g = grid.load(read_yaml(args.configfile, "workflow config"), source=args.configfile)
    throughput = [plan.load_throughput(path) for path in args.throughput]
    try:
        while True:
            s = status.grid_status(g, args.logs, throughput)
            out = json.dumps(s.to_json(), indent=1) + "\n" if args.json else status.text(s)
            if args.watch and not args.json:  # JSON stays one object a refresh, for the script reading it
                out = "\033[H\033[2J" + time.strftime("%H:%M:%S ") + f"every {args.watch:g} s (Ctrl-C ends)\n" + out
            print(out, end="", flush=True)
            if not args.watch:
                return
            time.sleep(args.watch)
    except KeyboardInterrupt:  # how --watch ends, whether it was reading or waiting
        if not args.watch:
            raise


def cmd_tensorboard(args: argparse.Namespace) -> None:
    """Every run's log.jsonl (and gallery) into TensorBoard event files, appending only what is new."""
    from part.analysis import tensorboard_export
    from part.base import grid

    g = grid.load(read_yaml(args.configfile, "workflow config"), source=args.configfile)
    exported = tensorboard_export.export(g, args.out)
    added = [e for e in exported if e.epochs or e.image]
    for e in added:
        print(f"[part] {e.out}: {e.epochs} new epoch(s)" + (", gallery image" if e.image else ""))
    print(f"[part] {len(added)} of {len(exported)} runs updated; view them with `tensorboard --logdir {args.out}`")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r}: expected seconds between refreshes, a number > 0")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="part", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="download (or take from a mirror) and prepare a dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="data/prepared", type=_path, help="directory for {dataset}.pt")
    p.add_argument("--raw-dir", default="data/raw", type=_path, help="downloaded archives go to RAW_DIR/{dataset}/")
    p.add_argument("--mirror", help="directory, file:// or http(s) base holding the original archives")
    p.add_argument("--split-seed", type=_whole(0), default=0, help="train/test split of digits")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one run (resumes if interrupted)")
    p.add_argument("--config", required=True, help="run config (YAML); see part/schema/run.schema.json")
    p.add_argument("--out", required=True, type=_path, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run (natural, pgd20, mma, mm3, aa) into metrics.json")
    p.add_argument("--run", required=True, type=_path, help="run directory written by `part train`")
    p.add_argument("--attacks", default="natural,pgd20,mma,aa",
                   help="comma-separated, from natural,pgd20,mma,mm3,aa and the checks curve,sanity (default settings)")
    p.add_argument("--n-examples", type=_whole(1), default=None, help="evaluate the first N test examples (default: all)")
    p.add_argument("--batch-size", type=int, default=None, help="images per attack batch (default 500)")
    p.add_argument("--device", default=None, help="default: the run's device")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 autocast (the GPU path; also on the CPU)")
    p.add_argument("--seed", type=_whole(0), default=0, help="seed of every attack's random start")
    p.add_argument("--data-dir", default=None, type=_path, help="directory of prepared datasets (default: the run's)")
    p.add_argument("--checkpoint", choices=CHECKPOINTS, default="last",
                   help="weights: last = model.pt (the paper's), best = best.pt (needs validation.size > 0), "
                        "ema = ema.pt (needs ema.decay > 0); results go to eval_<name>/ and metrics_<name>.json")
    merging = p.add_mutually_exclusive_group()
    merging.add_argument("--no-merge", action="store_true",
                         help="only write eval/<attack>.{json,correct.npz} (one job per attack)")
    merging.add_argument("--merge-only", action="store_true",
                         help="only merge the run's eval/<attack>.json files into metrics.json")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tables", help="tables (and experiment figures) of the runs of a grid evaluated so far")
    p.add_argument("--configfile", default="config.yaml", help="workflow config (the grid)")
    p.add_argument("--out", default=None, type=_path,
                   help="directory written in place of the config's results_dir: OUT/tables/ (the main table) and "
                        "OUT/experiments/NAME/ (each experiment's table and figure); default: results_dir")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("plan", help="jobs and estimated device-hours (GPU-h; CPU-h where a CPU measured them) of a "
                                    "grid per dataset and stage, before submitting")
    p.add_argument("--configfile", default="config.yaml", help="workflow config (the grid)")
    p.add_argument("--throughput", action="extend", nargs="+", default=[], metavar="FILE",
                   help="JSONs of benchmarks/device_check.py, train_throughput.py or eval_throughput.py (the first that "
                        "measured a job costs it; the grid's own runs come before any; rows nothing measured take "
                        "the shipped estimate, part/reference/rates.json)")
    p.add_argument("--workflow-profile", metavar="DIR", help="count jobs as this Snakemake profile cuts them (its "
                   "config: entries, e.g. profiles/slurm's one job per attack)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("status", help="where every run of a grid stands (state, last epoch, ETA), from its files only")
    p.add_argument("--configfile", default="config.yaml", help="workflow config (the grid)")
    p.add_argument("--logs", default="logs", type=_path,
                   help="the workflow's job logs (logs/<rule>/...; relative to where Snakemake runs)")
    p.add_argument("--throughput", action="extend", nargs="+", default=[], metavar="FILE",
                   help="throughput files costing the runs that logged no epoch yet, as for `part plan` "
                        "(default: the shipped rates)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--watch", type=_seconds, metavar="N", help="redraw every N seconds until Ctrl-C")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tensorboard", help="the grid's training logs as TensorBoard event files (the tensorboard "
                                           "extra); a rerun appends only new epochs")
    p.add_argument("--configfile", default="config.yaml", help="workflow config (the grid)")
    p.add_argument("--out", required=True, type=_path, help="log directory: OUT/<dataset>/<variant>/seed<k>")
    p.set_defaults(func=cmd_tensorboard)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    # OSError: missing files, permissions, a full disk; Locked: another process writes the same files
    except (ConfigError, ValueError, OSError, Locked) as err:
        print(f"part {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except DivergenceError as err:
        print(f"part {args.command}: diverged: {err}", file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
