import pytest

from part.base import config
from part.base.config import ConfigError


def test_dataset_defaults_follow_the_paper():
    cifar = config.from_dict({"dataset": "cifar10"})
    assert (cifar.epochs, cifar.warmup_epochs, cifar.batch_size) == (80, 20, 128)
    assert cifar.attack.eps == pytest.approx(8 / 255) and cifar.attack.eps_low == pytest.approx(7 / 255)
    assert cifar.attack.alpha == pytest.approx(2 / 255) and cifar.attack.steps == 10
    assert cifar.optim.weight_decay == 2e-4 and cifar.augment.crop_padding == 4 and cifar.augment.flip
    svhn = config.from_dict({"dataset": "svhn"})
    assert svhn.attack.alpha == pytest.approx(1 / 255) and svhn.optim.weight_decay == 3.5e-3
    assert not svhn.augment.flip and svhn.augment.crop_padding == 0
    assert config.from_dict({"dataset": "tinyimagenet200"}).model == "wrn34_10"


def test_release_lr_schedule_drops_only_for_the_last_epoch():
    optim = config.from_dict({"dataset": "cifar10"}).optim
    assert [optim.lr_at(e) for e in (0, 78)] == [0.01, 0.01]
    assert optim.lr_at(79) == pytest.approx(0.001)


@pytest.mark.parametrize("s", [1, 2, 5, 10, 20, 60])
def test_refresh_schedule_is_the_releases(s):
    """Before PART epoch 1, then before every PART epoch e >= 2 (1-based) with e mod s == 0."""
    cfg = config.from_dict({"dataset": "cifar10", "mask": {"refresh_every": s}})  # 20 warm-up + 60 PART epochs
    refreshed = [e - 20 + 1 for e in range(80) if cfg.refreshes_at(e)]  # as 1-based PART epochs
    assert refreshed == [1] + [e for e in range(2, 61) if e % s == 0]
    assert refreshed == sorted({1, *range(s, 61, s)})  # the same rule, stated as the multiples of s


def test_refresh_schedule_for_s_10_has_seven_passes():
    cfg = config.from_dict({"dataset": "cifar10", "mask": {"refresh_every": 10}})
    assert [e for e in range(80) if cfg.refreshes_at(e)] == [20, 29, 39, 49, 59, 69, 79]
    assert not config.from_dict({"dataset": "cifar10", "method": "at"}).refreshes_at(20)


def test_user_values_override_dataset_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: svhn\noptim: {lr: 0.1}\nattack: {eps: 10/255}\n")
    cfg = config.load(path, {"seed": 3})
    assert cfg.optim.lr == 0.1 and cfg.optim.weight_decay == 3.5e-3 and cfg.seed == 3
    assert cfg.attack.eps == pytest.approx(10 / 255)


@pytest.mark.parametrize("raw, key", [
    ({"dataset": "cifar10", "optim": {"lrr": 0.1}}, "optim.lrr"),
    ({"dataset": "cifar10", "method": "parts"}, "method"),
    ({"dataset": "cifar10", "attack": {"eps_low": "9/255"}}, "attack.eps_low"),
    ({"dataset": "cifar10", "attack": {"eps": "8/two"}}, "attack.eps"),
    ({"dataset": "cifar10", "epochs": 10, "warmup_epochs": 10}, "warmup_epochs"),
    ({"dataset": "cifar10", "cam": {"method": "scorecam"}}, "cam.method"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"model": "resnet18"}, "dataset"),
    ({"dataset": "cifar10", "optim": {"lr_milestones": [50, 10]}}, "optim.lr_milestones"),
    ({"dataset": "cifar10", "width": 16}, "width"),  # ResNet-18 keeps its published width
    ({"dataset": "digits", "width": 0}, "width"),
])
def test_bad_configs_name_the_file_and_key(raw, key):
    with pytest.raises(ConfigError, match=rf"run\.yaml: key '{key}'"):
        config.from_dict(raw, source="run.yaml")


def test_grad_cam_backend_accepts_the_package_methods():
    cfg = config.from_dict({"dataset": "cifar10", "cam": {"method": "scorecam", "backend": "grad-cam"}})
    assert cfg.cam.backend == "grad-cam"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [cifar10\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        config.load(bad)


def test_to_dict_round_trips():
    cfg = config.from_dict({"dataset": "digits", "method": "part_mart", "width": 12})
    again = config.from_dict(cfg.to_dict())
    assert again == cfg and again.width == 12
    assert config.from_dict({"dataset": "digits"}).width is None  # the architecture's own
