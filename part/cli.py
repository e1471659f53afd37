"""``part`` command line: ``part prepare``, ``part train`` (evaluation, aggregation and plots join later)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from part.config import ConfigError
from part.train import DivergenceError


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``a.b=value`` pairs (values parsed as YAML) to a nested dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set attack.steps=5")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def cmd_prepare(args: argparse.Namespace) -> None:
    from part.data import prepare_digits, save_prepared

    if args.dataset != "digits":
        raise SystemExit(f"part prepare: {args.dataset!r} is prepared from its downloaded archives by the "
                         "workflow; only 'digits' (bundled with scikit-learn) is prepared here")
    path = save_prepared(Path(args.out) / "digits.pt", prepare_digits(seed=args.split_seed))
    print(f"[part] wrote {path}")


def cmd_train(args: argparse.Namespace) -> None:
    from part import config
    from part.train import train

    cfg = config.load(args.config, _overrides(args.set))
    train(cfg, args.out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="part", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write a prepared dataset file")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="data/prepared", help="directory for {dataset}.pt")
    p.add_argument("--split-seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one run (resumes if interrupted)")
    p.add_argument("--config", required=True, help="run config (YAML); see part/schema/run.schema.json")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=cmd_train)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"part {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except DivergenceError as err:
        print(f"part {args.command}: diverged: {err}", file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
