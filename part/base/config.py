"""The settings of one training run: defaults, per-dataset defaults, validation.

A run is described by a small YAML file; everything it leaves out comes from the paper's setting
for its dataset (``DATASET_DEFAULTS``, from the authors' release, see docs) and then from
``DEFAULTS``. The merged result is validated against ``schema/run.schema.json`` — the same schema
the Snakemake workflow checks its grid against — and then against the rules a schema cannot
express (ε_low ≤ ε, milestones inside the run, ...). Errors name the file and the key.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from part.base import files, vocabulary
from part.base.errors import echo, shorten

BASE_METHOD = vocabulary.BASE_METHOD

DEFAULTS: dict[str, Any] = {
    "data_dir": "data/prepared",
    "model": "resnet18",
    "width": None,  # the architecture's own; only small_cnn has a setting (vocabulary.WIDTH_MODELS)
    "method": "part",
    "seed": 0,
    "epochs": 80,
    "warmup_epochs": 20,
    "batch_size": 128,
    "beta": 6.0,
    # The release asks for decays at PART epochs 60 and 90 of an 80-epoch run whose first 20 are
    # warm-up, so only the last epoch runs at lr/10: that is the schedule it executed.
    "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 2e-4, "lr_milestones": [79], "lr_gamma": 0.1},
    "attack": {"eps": "8/255", "eps_low": "7/255", "alpha": "2/255", "steps": 10, "generator": "pgd",
               "pixel_start": "per_pixel"},
    "cam": {"method": "gradcam", "backend": "torch", "resize": "bicubic", "normalise": "max_eps"},
    "mask": {"refresh_every": 1, "recipe": "default", "pairing": "own"},
    "batchnorm": {"slices": 1},
    # The reference TRADES loss runs f(x), f(x'), f(x): batch-norm statistics move three times a batch.
    "trades_forwards": 3,
    "preset": "default",
    "augment": {"crop_padding": 0, "flip": False},
    # Not in the paper (which evaluates the last epoch's weights): robust validation and weight averaging.
    "validation": {"size": 0, "seed": 0, "every": 1, "steps": 10},
    "ema": {"decay": 0.0},
    "precision": "fp32",
    "channels_last": False,
    "compile": "none",
    "device": "auto",
}

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"augment": {"crop_padding": 4, "flip": True}},
    "svhn": {"optim": {"weight_decay": 3.5e-3}, "attack": {"alpha": "1/255"}},
    # Not in the release: the CIFAR-10 recipe at 64x64, as the paper's TinyImageNet table implies.
    "tinyimagenet200": {"model": "wrn34_10", "augment": {"crop_padding": 4, "flip": True}},
    # Small grey-scale sets: 8/255 barely moves a model here, so the budgets of the MNIST literature.
    "fashion_mnist": {"attack": {"eps": 0.1, "eps_low": 0.0875, "alpha": 0.02}},
    "digits": {"model": "small_cnn", "epochs": 12, "warmup_epochs": 4, "batch_size": 64,
               "optim": {"lr": 0.05, "lr_milestones": [10]},
               "attack": {"eps": "48/255", "eps_low": "40/255", "alpha": "12/255", "steps": 5}},
}


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Every behaviour of the authors' release that this pipeline does differently by default (the
    # departures table of docs/departures.md lists each with its reason). Two more are already the
    # defaults: the lr schedule the release executes (``optim.lr_milestones``) and TRADES' three forwards.
    "release": {
        "mask": {"pairing": "batch_index", "recipe": "official_jet"},
        "cam": {"resize": "pil_bicubic", "normalise": "max"},
        "attack": {"pixel_start": "scalar_unclipped"},
        "batchnorm": {"slices": 4},
        "trades_forwards": 3,
    },
}
"""Named bundles of settings, as AutoAttack's versions: merged over the dataset's defaults, under the
run's own keys (so ``{preset: release, mask: {recipe: default}}`` is the release but one switch)."""

RELEASE_LR_DECAYS = (60, 90)
"""The release's lr decay epochs, counted (1-based) in the PART phase: see :func:`release_behaviours`."""


class ConfigError(ValueError):
    """A run configuration that cannot be trained, with the file and key at fault in its message."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    momentum: float
    weight_decay: float
    lr_milestones: tuple[int, ...]
    lr_gamma: float

    def lr_at(self, epoch: int) -> float:
        """The learning rate of a (0-based) epoch under the piecewise-constant schedule."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)


@dataclass(frozen=True)
class AttackConfig:
    eps: float
    eps_low: float
    alpha: float
    steps: int
    generator: str
    pixel_start: str


@dataclass(frozen=True)
class CamConfig:
    method: str
    backend: str
    resize: str
    normalise: str


@dataclass(frozen=True)
class MaskConfig:
    refresh_every: int
    recipe: str
    pairing: str


@dataclass(frozen=True)
class BatchNormConfig:
    slices: int


@dataclass(frozen=True)
class AugmentConfig:
    crop_padding: int
    flip: bool


@dataclass(frozen=True)
class ValidationConfig:
    size: int
    seed: int
    every: int
    steps: int


@dataclass(frozen=True)
class EmaConfig:
    decay: float


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    data_dir: str
    model: str
    width: int | None
    method: str
    seed: int
    epochs: int
    warmup_epochs: int
    batch_size: int
    beta: float
    optim: OptimConfig
    attack: AttackConfig
    cam: CamConfig
    mask: MaskConfig
    batchnorm: BatchNormConfig
    trades_forwards: int
    preset: str
    augment: AugmentConfig
    validation: ValidationConfig
    ema: EmaConfig
    precision: str
    channels_last: bool
    compile: str
    device: str
    source: str = field(default="<dict>", compare=False)

    @property
    def base_method(self) -> str:
        return BASE_METHOD[self.method]

    @property
    def pixel_reweighted(self) -> bool:
        return self.method in vocabulary.PART_METHODS

    def is_part_epoch(self, epoch: int) -> bool:
        return self.pixel_reweighted and epoch >= self.warmup_epochs

    def refreshes_at(self, epoch: int) -> bool:
        """Whether the ε-maps are recomputed before this (0-based) epoch: the release's schedule.

        Before PART epoch 1, then before every PART epoch e ≥ 2 (1-based) with e mod s = 0: for s = 10
        and 60 PART epochs, before 1, 10, 20, …, 60 (seven passes). This is the schedule the paper's
        "PART (s = 10)" ran, so it is the only one.
        """
        if not self.is_part_epoch(epoch):
            return False
        part_epoch = epoch - self.warmup_epochs + 1
        return part_epoch == 1 or part_epoch % self.mask.refresh_every == 0

    def validates_at(self, epoch: int) -> bool:
        """Whether the held-out split is evaluated after this (0-based) epoch: every ``validation.every``
        epochs and always after the last, so the final weights are among the candidates for best.pt."""
        v = self.validation
        return v.size > 0 and ((epoch + 1) % v.every == 0 or epoch == self.epochs - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d["optim"]["lr_milestones"] = list(d["optim"]["lr_milestones"])
        return d


def schema() -> dict[str, Any]:
    return json.loads(resources.files("part").joinpath("schema/run.schema.json").read_text())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    """The run schema's validator, read once per process: a workflow grid validates hundreds of runs."""
    return jsonschema.Draft202012Validator(schema())


def parse_budget(value: float | int | str) -> float:
    """``8/255`` (as written in papers) or a number, to a float."""
    if isinstance(value, str):
        num, den = (Fraction(p.strip()) for p in value.split("/"))
        return float(num / den)
    return float(value)


def _budget(attack: dict[str, Any], key: str, source: str) -> float:
    """``parse_budget`` of ``attack[key]``, with an error naming the key (``8/0`` passes the schema)."""
    try:
        value = parse_budget(attack[key])
    except (ZeroDivisionError, ValueError):
        raise ConfigError(f"{source}: key 'attack.{key}': got {echo(attack[key])}, expected a number or a "
                          "fraction such as 8/255 with a non-zero denominator") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{source}: key 'attack.{key}': {attack[key]!r} = {value:.6g}, expected a budget in [0, 1]")
    return value


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def error_key(err: jsonschema.ValidationError) -> str:
    """The dotted key a schema error is about; for an unknown key, the unknown key itself (not its parent)."""
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)' (?:was|were) unexpected", err.message)
        unknown = [k for k in (err.instance or {}) if k not in err.schema.get("properties", {})]
        name = unknown[0] if unknown else (extra[0] if extra else "?")
        path = f"{path}.{name}" if path else name
    return shorten(path) if path else "<top level>"  # a key pasted by mistake may be megabytes long


def error_message(err: jsonschema.ValidationError) -> str:
    """What is wrong at :func:`error_key`, with the values allowed there where the schema lists them."""
    if err.validator == "enum":
        return f"got {echo(err.instance)}, expected one of {err.validator_value}"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        return f"unknown key (allowed here: {', '.join(allowed)})"
    if err.validator == "required":
        return err.message
    if err.validator == "pattern" and "description" in err.schema:
        return described_message(err)
    return f"got {echo(err.instance)}: {schema_message(err)}"


def schema_message(err: jsonschema.ValidationError) -> str:
    """jsonschema's own message, with the value it quotes shortened as :func:`part.base.errors.echo` shortens it."""
    return err.message.replace(repr(err.instance), echo(err.instance))


def described_message(err: jsonschema.ValidationError) -> str:
    """:func:`schema_message` in the schema's own words where its ``description`` has them: a pattern as what the
    regular expression means, a minimum followed by why the bound is there."""
    if "description" in err.schema:
        if err.validator == "pattern":
            return f"got {echo(err.instance)}, expected {err.schema['description']}"
        if err.validator == "minimum":
            return f"{schema_message(err)} ({err.schema['description']})"
    return schema_message(err)


def non_finite_key(tree: Any, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in ``tree`` (YAML's ``.nan``, ``.inf``), None if none.

    A JSON schema cannot refuse them: every comparison with NaN is false, so ``minimum: 0`` lets NaN through.
    """
    if isinstance(tree, float) and not math.isfinite(tree):
        return prefix or "<top level>"
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if (found := non_finite_key(value, f"{prefix}.{key}" if prefix else str(key))) is not None:
            return found
    return None


def validate_raw(raw: dict[str, Any], source: str = "<dict>") -> None:
    """Check a (partial or merged) run config against the JSON schema; raise on the first error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a run config must be a mapping, got {type(raw).__name__}")
    if (key := non_finite_key(raw)) is not None:
        raise ConfigError(f"{source}: key '{key}': got {_at(raw, key)!r}, expected a finite number")
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"{source}: key '{error_key(err)}': {error_message(err)}")


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Merge ``raw`` over the defaults of its dataset, validate, and build the typed config."""
    validate_raw(raw, source)
    if "dataset" not in raw:
        raise ConfigError(f"{source}: key 'dataset' is required (one of {sorted(DATASET_DEFAULTS)})")
    preset = PRESETS[raw.get("preset", DEFAULTS["preset"])]
    merged = deep_merge(deep_merge(deep_merge(DEFAULTS, DATASET_DEFAULTS[raw["dataset"]]), preset), raw)
    validate_raw(merged, source)
    a = merged["attack"]
    cfg = RunConfig(
        **{k: merged[k] for k in ("dataset", "data_dir", "model", "width", "method", "seed", "epochs", "warmup_epochs",
                                  "batch_size", "precision", "channels_last", "compile", "device")},
        beta=float(merged["beta"]),
        optim=OptimConfig(**{**merged["optim"], "lr_milestones": tuple(merged["optim"]["lr_milestones"])}),
        attack=AttackConfig(**{k: _budget(a, k, source) for k in ("eps", "eps_low", "alpha")},
                            steps=a["steps"], generator=a["generator"],
                            pixel_start=a["pixel_start"]),
        cam=CamConfig(**merged["cam"]),
        mask=MaskConfig(**merged["mask"]),
        batchnorm=BatchNormConfig(**merged["batchnorm"]),
        trades_forwards=merged["trades_forwards"],
        preset=merged["preset"],
        augment=AugmentConfig(**merged["augment"]),
        validation=ValidationConfig(**merged["validation"]),
        ema=EmaConfig(decay=float(merged["ema"]["decay"])),
        source=source,
    )
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: RunConfig) -> None:
    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{cfg.source}: key '{key}': {msg}")

    if cfg.width is not None and cfg.model not in vocabulary.WIDTH_MODELS:
        fail("width", f"{cfg.width} given for model {cfg.model!r}; only {', '.join(vocabulary.WIDTH_MODELS)} "
                      "has a width setting (expected width: null)")
    if cfg.attack.alpha <= 0:
        fail("attack.alpha", f"got {cfg.attack.alpha:.6g}, expected a step size > 0 (a zero step never moves the "
                             "attack off its start)")
    if cfg.attack.eps <= 0 and cfg.method != "natural":
        fail("attack.eps", f"got {cfg.attack.eps:.6g}, expected a budget > 0 for method {cfg.method} (with no budget "
                           "it trains on clean images: that is method natural)")
    if cfg.attack.eps_low > cfg.attack.eps:
        fail("attack.eps_low", f"{cfg.attack.eps_low:.6g} exceeds attack.eps = {cfg.attack.eps:.6g}; expected eps_low <= eps")
    if cfg.pixel_reweighted and cfg.warmup_epochs >= cfg.epochs:
        fail("warmup_epochs", f"{cfg.warmup_epochs} leaves no PART epoch in a {cfg.epochs}-epoch run; expected < epochs")
    if list(cfg.optim.lr_milestones) != sorted(set(cfg.optim.lr_milestones)):
        fail("optim.lr_milestones", f"{list(cfg.optim.lr_milestones)} must be strictly increasing")
    if cfg.cam.backend == "torch":
        if cfg.cam.method not in vocabulary.TORCH_CAM_METHODS:
            fail("cam.method", f"got {cfg.cam.method!r}, the torch backend offers {list(vocabulary.TORCH_CAM_METHODS)} "
                               "(set cam.backend: grad-cam for the package's other methods)")
    if cfg.cam.backend == "grad-cam" and cfg.cam.resize == "pil_bicubic":
        fail("cam.resize", "pil_bicubic is a resize of the torch backend; the grad-cam backend always resizes "
                           "with OpenCV's bilinear filter (expected cam.backend: torch)")
    if cfg.cam.backend == "grad-cam" and cfg.cam.normalise != "max_eps":
        fail("cam.normalise", f"{cfg.cam.normalise} is a normalisation of the torch backend; the grad-cam backend "
                              "always divides by max + 1e-7 (expected cam.backend: torch, or cam.normalise: max_eps)")
    if cfg.batchnorm.slices > cfg.batch_size:
        fail("batchnorm.slices", f"{cfg.batchnorm.slices} slices of a {cfg.batch_size}-image batch; "
                                 "expected at most batch_size")


def release_behaviours(cfg: RunConfig) -> dict[str, bool]:
    """Which of the release's behaviours this run has, by the setting that switches each (for run.json).

    The lr schedule counts as the release's when the milestones are the release's decay epochs (PART
    epochs 60 and 90, 1-based) that fall inside the run, as 0-based epochs of the whole run.
    """
    release_milestones = tuple(cfg.warmup_epochs + d - 1 for d in RELEASE_LR_DECAYS
                               if cfg.warmup_epochs + d - 1 < cfg.epochs)
    run = cfg.to_dict()
    flags = {key: _at(run, key) == value for key, value in _flatten(PRESETS["release"]).items()}
    flags["optim.lr_milestones"] = cfg.optim.lr_milestones == release_milestones and cfg.optim.lr_gamma == 0.1
    return flags


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"mask": {"pairing": v}} -> {"mask.pairing": v}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _at(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[int(key) if isinstance(tree, list) else key]
    return tree


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (which it would resolve silently: the
    last wins, so a setting written twice in a config ran with whichever came last)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        with contextlib.suppress(TypeError):  # an unhashable key: construct_mapping refuses it itself
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {echo(key)} is given twice in one mapping (lines {lines[key]} and "
                                f"{key_node.start_mark.line + 1}); keep one")
            lines[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` of ``source`` (a file, a flag), as the safe loader reads it but with duplicate keys refused:
    every config this package reads goes through here. An error is one line naming ``source`` and the place."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(filter(None, [err.context, err.problem]))
        raise ConfigError(f"{source}: not valid YAML ({shorten(what)}{where})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({shorten(str(err))})") from None


def read_yaml(path: str | Path, what: str = "run config") -> dict[str, Any]:
    """A config file's mapping (an empty file is an empty one), with errors that name the file."""
    path = Path(path)
    try:
        raw = parse_yaml(files.read_utf8(path, f"save the {what} as UTF-8", ConfigError), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, expected a {what} (a YAML file)") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be a YAML mapping of keys, got {str(raw)[:60]!r} "
                          f"({type(raw).__name__})")
    return raw


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run config from YAML (optionally with overrides merged on top)."""
    return from_dict(deep_merge(read_yaml(path), overrides or {}), str(path))
