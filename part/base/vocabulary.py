"""The names a config may use, one registry per vocabulary: datasets, models, methods, recipes, CAMs, attacks.

Plain tuples (and the datasets' shapes) with no imports, so that the Snakefile parse and config validation read them without torch.
The JSON schemas restate them as enums (a schema is data a user reads and an editor completes);
``tests/test_vocabulary.py`` checks every enum of every schema against the tuple here, and every code
registry (model builders, dataset shapes and sources, per-dataset defaults, attack specs) against them.
"""

DATASETS = ("cifar10", "svhn", "tinyimagenet200", "fashion_mnist", "digits")
SHAPES: dict[str, tuple[int, int, int, int]] = {
    # name: (channels, height, width, classes) of a prepared dataset's images
    "cifar10": (3, 32, 32, 10),
    "svhn": (3, 32, 32, 10),
    "tinyimagenet200": (3, 64, 64, 200),
    "fashion_mnist": (1, 28, 28, 10),
    "digits": (1, 8, 8, 10),
}
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    # name: (train, test) images of a prepared dataset: the published splits (digits: prepare_digits' default)
    "cifar10": (50_000, 10_000),
    "svhn": (73_257, 26_032),
    "tinyimagenet200": (100_000, 10_000),
    "fashion_mnist": (60_000, 10_000),
    "digits": (1_437, 360),
}
MODELS = ("resnet18", "preact_resnet18", "wrn34_10", "small_cnn")
WIDTH_MODELS = ("small_cnn",)
"""The models whose width a run config may set (``width``); the paper's backbones keep their published widths."""

BASE_METHOD = {"natural": "natural", "at": "at", "trades": "trades", "mart": "mart",
               "part": "at", "part_trades": "trades", "part_mart": "mart"}
"""Each method's base family; the ``part*`` methods are their base with the ε-map projection."""
METHODS = tuple(BASE_METHOD)
PART_METHODS = tuple(m for m in METHODS if m.startswith("part"))
"""The pixel-reweighted methods: the one place that decides what "a PART variant" is."""

CAM_RECIPES = ("default", "official_jet")
"""The importance recipes that read a CAM."""
QUADRANT_RECIPES = ("quadrant_ul", "quadrant_ur", "quadrant_bl", "quadrant_br")
"""The fixed-region recipes of the paper's proof of concept: ε_low on one quadrant, no CAM."""
RECIPES = CAM_RECIPES + QUADRANT_RECIPES
PAIRINGS = ("own", "batch_index")

TORCH_CAM_METHODS = ("gradcam", "xgradcam", "layercam")
"""The CAMs the batched torch backend computes (the grad-cam backend offers the package's others too)."""
CAM_BACKENDS = ("torch", "grad-cam")
RESIZES = ("bicubic", "pil_bicubic", "bilinear")
"""The upsamplings of the torch backend (``cam.resize``): torch's bicubic, PIL's (the release's), bilinear."""
CAM_NORMALISATIONS = ("max_eps", "max")
"""How the torch backend scales a CAM to [0, 1] (``cam.normalise``): (m − min) / (max + 1e-7) as grad-cam,
or / max alone as torchcam 0.3.2 (the release's)."""

GENERATORS = ("pgd", "mma")
PIXEL_STARTS = ("per_pixel", "scalar_unclipped")
"""Pixel-AG's random start (``attack.pixel_start``): in the ε-map's ball, or the release's x + U(−ε, ε) with the
scalar ε — unclipped for PGD, clipped to [0, 1] for MMA (``attack.generator: mma``), as the release starts each."""
PRECISIONS = ("fp32", "bf16")
CHECKPOINTS = ("last", "best", "ema")
"""The weights a run can keep and be evaluated with (``part.base.rundir.CHECKPOINT_FILES`` names their files)."""
COMPARE_ATTACKS = ("natural", "pgd20")
"""What each compared checkpoint is evaluated with (``evaluation.compare_checkpoints``): the cheap pair."""
EVAL_JOBS = ("per_model", "per_attack")
"""How the workflow cuts a run's evaluation into jobs (``evaluation.jobs``): one job loads the model and data
once for all its attacks (per_model: a process start saved per attack), or one job per attack (per_attack: on a
cluster AutoAttack's long tail runs beside the cheap attacks). The files and their contents are the same."""
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
PRESETS = ("default", "release")
TRADES_FORWARDS = (2, 3)

TABLE_ATTACKS = ("natural", "pgd20", "mma", "aa")
"""The paper's table columns; its MMA column is the release's variant."""
ATTACKS = TABLE_ATTACKS + ("mm3", "aa_release")
"""Every evaluation attack. ``aa_release`` is the AutoAttack the paper's AA column was measured with
(torchattacks, 10 iterations per APGD/FAB attack): weaker than standard ``aa``, offered so that the paper's
numbers are compared with ours under their own protocol."""
AUTOATTACKS = ("aa", "aa_release")
"""The AutoAttack protocols: run on ``evaluation.aa_n_examples`` test images, the costly tail of every grid."""
CHECKS = ("curve", "sanity")
"""Evaluation units that are not table columns: the robustness curve (accuracy vs ε, ``part.evaluation.curve``) and the
convergence / gradient-masking checks (``part.evaluation.sanity``). ``part.evaluation.evaluate.evaluate`` runs them like an attack,
each into its own ``eval/<name>.json`` + ``.correct.npz``; they are never merged into ``metrics.json``."""
EVALUATIONS = ATTACKS + CHECKS
"""Every name ``part.evaluation.evaluate.evaluate`` accepts."""
ATTACK_KINDS = ("natural", "pgd", "mma", "mm3", "autoattack", "torchattacks_autoattack")
NORMS = ("Linf", "L2", "L1")
REFERENCES = ("paper_figure1",)
"""Published numbers an experiment can print and plot beside its own (``part/reference/*.csv``)."""
