"""One vocabulary: every enum of every JSON schema and every code registry agrees with ``part.base.vocabulary``.

A name added in one place and not the others (a model builder without its schema enum, an attack in
the schema that evaluation cannot run) fails here instead of at the first job that uses it.
"""

import json
from importlib import resources

import pytest

from part import models
from part.analysis import gallery, tablefmt
from part.attacks.suite import attack_specs
from part.base import config, rundir, vocabulary
from part.data import prepared as data, sources
from part.models import build_model
from part.training import importance

SCHEMA_ENUMS = {
    ("run", "/properties/dataset"): vocabulary.DATASETS,
    ("run", "/properties/model"): vocabulary.MODELS,
    ("run", "/properties/method"): vocabulary.METHODS,
    ("run", "/properties/attack/properties/generator"): vocabulary.GENERATORS,
    ("run", "/properties/attack/properties/pixel_start"): vocabulary.PIXEL_STARTS,
    ("run", "/properties/cam/properties/backend"): vocabulary.CAM_BACKENDS,
    ("run", "/properties/cam/properties/resize"): vocabulary.RESIZES,
    ("run", "/properties/cam/properties/normalise"): vocabulary.CAM_NORMALISATIONS,
    ("run", "/properties/mask/properties/recipe"): vocabulary.RECIPES,
    ("run", "/properties/mask/properties/pairing"): vocabulary.PAIRINGS,
    ("run", "/properties/trades_forwards"): vocabulary.TRADES_FORWARDS,
    ("run", "/properties/preset"): vocabulary.PRESETS,
    ("run", "/properties/precision"): vocabulary.PRECISIONS,
    ("run", "/properties/compile"): vocabulary.COMPILE_MODES,
    ("workflow", "/$defs/experiment/properties/attacks/items"): vocabulary.ATTACKS,
    ("workflow", "/$defs/experiment/properties/reference"): vocabulary.REFERENCES,
    ("workflow", "/properties/datasets/propertyNames"): vocabulary.DATASETS,
    ("workflow", "/properties/datasets/additionalProperties/properties/arch"): vocabulary.MODELS,
    ("workflow", "/properties/evaluation/properties/attacks/items"): vocabulary.ATTACKS,
    ("workflow", "/properties/evaluation/properties/jobs"): vocabulary.EVAL_JOBS,
    ("workflow", "/properties/evaluation/properties/checkpoint"): vocabulary.CHECKPOINTS,
    ("workflow", "/properties/evaluation/properties/compare_checkpoints/items"): vocabulary.CHECKPOINTS,
    ("metrics", "/$defs/checkpoint"): vocabulary.CHECKPOINTS,
    ("metrics", "/$defs/attack_name"): vocabulary.ATTACKS,
    ("metrics", "/$defs/settings/properties/kind"): vocabulary.ATTACK_KINDS,
    ("metrics", "/$defs/settings/properties/norm"): vocabulary.NORMS,
    ("metrics", "/$defs/settings/allOf/1/if/properties/kind"): tuple(k for k in vocabulary.ATTACK_KINDS
                                                                     if k in ("pgd", "mma", "mm3")),
    ("metrics", "/$defs/attack_entry/properties/precision"): vocabulary.PRECISIONS,
}
"""Where each schema restates a vocabulary."""


def schema_enums(name):
    """(JSON pointer, enum) of every enum in a schema, however deep."""
    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from [(path, value)] if key == "enum" else walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}/{i}")

    return list(walk(json.loads(resources.files("part").joinpath(f"schema/{name}.schema.json").read_text()), ""))


@pytest.mark.parametrize("schema", ["run", "workflow", "metrics"])
def test_every_schema_enum_is_a_registered_vocabulary(schema):
    found = schema_enums(schema)
    assert found, schema
    for pointer, enum in found:
        assert (schema, pointer) in SCHEMA_ENUMS, f"{schema}.schema.json{pointer}: an enum no vocabulary registers"
        expected = SCHEMA_ENUMS[schema, pointer]  # as sets: an enum's order means nothing to the validator
        assert len(enum) == len(set(enum)) and set(enum) == set(expected), f"{schema}.schema.json{pointer}"
    assert {p for s, p in SCHEMA_ENUMS if s == schema} == {p for p, _ in found}  # none registered twice or gone


def test_code_registries_use_the_vocabulary():
    assert tuple(data.SHAPES) == tuple(config.DATASET_DEFAULTS) == tuple(sources.SOURCES) == vocabulary.DATASETS
    assert tuple(vocabulary.SPLIT_SIZES) == vocabulary.DATASETS
    assert all((s.train_size, s.test_size) == vocabulary.SPLIT_SIZES[d] for d, s in sources.SOURCES.items())
    assert tuple(models._BUILDERS) == vocabulary.MODELS  # what build_model can build: each is tested in test_models
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg16", 10, 3)
    assert config.BASE_METHOD == vocabulary.BASE_METHOD
    assert set(vocabulary.BASE_METHOD.values()) <= set(vocabulary.METHODS)
    assert tuple(config.PRESETS) == vocabulary.PRESETS
    assert importance.RECIPES + tuple(importance.QUADRANTS) == vocabulary.RECIPES
    specs = attack_specs(8 / 255, 2 / 255)
    assert set(specs) == set(vocabulary.ATTACKS) and {s["kind"] for s in specs.values()} == set(vocabulary.ATTACK_KINDS)
    assert set(vocabulary.ATTACKS) | {"worst_case"} == set(tablefmt.COLUMNS)
    assert tuple(gallery.CAM_NAMES) == vocabulary.TORCH_CAM_METHODS
    for name in vocabulary.REFERENCES:
        assert resources.files("part").joinpath(f"reference/{name}.csv").is_file()
    assert tuple(rundir.CHECKPOINT_FILES) == vocabulary.CHECKPOINTS
    assert set(vocabulary.COMPARE_ATTACKS) <= set(vocabulary.ATTACKS)


def test_the_pixel_reweighted_methods_are_decided_in_one_place():
    assert vocabulary.PART_METHODS == ("part", "part_trades", "part_mart")
    for method in vocabulary.METHODS:
        cfg = config.from_dict({"dataset": "digits", "method": method})
        assert cfg.pixel_reweighted == (method in vocabulary.PART_METHODS)
