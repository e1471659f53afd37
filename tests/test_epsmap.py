import contextlib

import pytest
import torch

from part import config
from part.cam import unit_maps
from part.data import DeviceLoader, Split, load_prepared, make_generator
from part.epsmap import REFRESH_STREAM, EpsMapStore
from part.importance import importance_mask
from part.models import build_model


def setup(digits_dir, **mask):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu",
                            "augment": {"crop_padding": 2, "flip": True}, "mask": mask})
    train = load_prepared(digits_dir / "digits.pt").train
    split = Split(train.images[:300], train.labels[:300])
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1)
    loader = DeviceLoader(split, 64, "cpu", shuffle=True, crop_padding=2, flip=True)
    return cfg, model, loader


def test_own_pairing_maps_follow_their_image_through_crop_and_flip(digits_dir):
    cfg, model, loader = setup(digits_dir)
    store = EpsMapStore(cfg)
    store.refresh(model, loader, epoch=0, autocast=contextlib.nullcontext)
    assert store.masks.shape == (300, 1, 8, 8) and store.masks.dtype == torch.bool
    reference = importance_mask(unit_maps(model, loader.images.float() / 255))  # each image's own map
    assert torch.equal(store.masks, reference)
    for batch in loader.epoch(make_generator("cpu", 0, 0, 1)):
        eps = store.for_batch(batch)
        expected = batch.augmentation(reference[batch.index], fill=False)
        assert torch.equal(eps == cfg.attack.eps, expected)
        assert ((eps == cfg.attack.eps) | (eps == cfg.attack.eps_low)).all()


def test_refresh_leaves_the_model_untouched(digits_dir):
    cfg, model, loader = setup(digits_dir)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    EpsMapStore(cfg).refresh(model, loader, epoch=0, autocast=contextlib.nullcontext)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batch_index_pairing_reproduces_the_release(digits_dir):
    """Map i of one shuffled, augmented pass goes to position i of a later, reshuffled pass."""
    cfg, model, loader = setup(digits_dir, pairing="batch_index")
    store = EpsMapStore(cfg)
    store.refresh(model, loader, epoch=3, autocast=contextlib.nullcontext)
    refresh_pass = list(loader.epoch(make_generator("cpu", cfg.seed, 3, REFRESH_STREAM)))
    first = refresh_pass[0]
    assert torch.equal(store.masks[:64], importance_mask(unit_maps(model, first.x)))
    later = next(loader.epoch(make_generator("cpu", 0, 3, 1)))
    assert not torch.equal(later.index, first.index)  # another image's map...
    assert torch.equal(store.for_batch(later) == cfg.attack.eps, store.masks[:64])  # ...by position


def test_maps_before_a_refresh_are_an_error(digits_dir):
    cfg, _, loader = setup(digits_dir)
    with pytest.raises(RuntimeError, match="before the first refresh"):
        EpsMapStore(cfg).for_batch(next(loader.epoch(plain=True)))


def test_grad_cam_backend_feeds_the_same_store(digits_dir):
    cfg, model, loader = setup(digits_dir)
    cfg_pkg = config.from_dict({**cfg.to_dict(), "cam": {"method": "gradcam", "backend": "grad-cam"}})
    store = EpsMapStore(cfg_pkg)
    store.refresh(model, loader, epoch=0, autocast=contextlib.nullcontext)
    assert store.masks.shape == (300, 1, 8, 8) and store.masks.any()
