import contextlib

import numpy as np
import pytest
import torch

from part.base import config
from part.data.prepared import DeviceLoader, Split, load_prepared, make_generator
from part.models import build_model
from part.training.cam import unit_maps
from part.training.epsmap import REFRESH_STREAM, EpsMapStore
from part.training.importance import importance_mask


def setup(digits_dir, **mask):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu",
                            "augment": {"crop_padding": 2, "flip": True}, "mask": mask})
    train = load_prepared(digits_dir / "digits.pt").train
    split = Split(train.images[:300], train.labels[:300])
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1)
    loader = DeviceLoader(split, 64, "cpu", shuffle=True, crop_padding=2, flip=True)
    return cfg, model, loader


def _crop_and_flip(t: np.ndarray, padding: int, top: int, left: int, flip: bool) -> np.ndarray:
    """One (C, H, W) array zero-padded, cropped at (top, left) and mirrored left-right: by hand, in NumPy."""
    h, w = t.shape[-2:]
    padded = np.pad(t, ((0, 0), (padding, padding), (padding, padding)))
    out = padded[:, top:top + h, left:left + w]
    return out[:, :, ::-1] if flip else out


def test_own_pairing_maps_follow_their_image_through_crop_and_flip(digits_dir):
    """Each batch row's ε-map is its own image's map moved by the crop and flip that moved the image: the
    image's pixels, cropped and flipped in NumPy, are the batch's, and so are the map's the store's."""
    cfg, model, loader = setup(digits_dir)
    store = EpsMapStore(cfg)
    store.refresh(model, loader, epoch=0, autocast=contextlib.nullcontext)
    assert store.masks.shape == (300, 1, 8, 8) and store.masks.dtype == torch.bool
    reference = importance_mask(unit_maps(model, loader.images.float() / 255))  # each image's own map
    assert torch.equal(store.masks, reference)
    flipped = 0
    for batch in loader.epoch(make_generator("cpu", 0, 0, 1)):
        eps = store.for_batch(batch)
        assert ((eps == cfg.attack.eps) | (eps == cfg.attack.eps_low)).all()
        aug = batch.augmentation
        for row, i in enumerate(batch.index.tolist()):
            move = dict(padding=2, top=int(aug.top[row]), left=int(aug.left[row]), flip=bool(aug.flip[row]))
            image = _crop_and_flip(loader.images[i].numpy().astype(np.float32) / 255, **move)
            np.testing.assert_array_equal(batch.x[row].numpy(), image)
            mask = _crop_and_flip(reference[i].numpy(), **move)
            np.testing.assert_array_equal((eps[row] == cfg.attack.eps).numpy(), mask)
            flipped += move["flip"]
    assert 0 < flipped < 300  # both branches seen


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
    """With ``cam.backend: grad-cam`` the store's masks are those of pytorch_grad_cam's own GradCAM, called here
    directly on the un-augmented images (model in eval mode, the predicted class as target)."""
    from pytorch_grad_cam import GradCAM

    cfg, model, loader = setup(digits_dir)
    cfg_pkg = config.from_dict({**cfg.to_dict(), "cam": {"method": "gradcam", "backend": "grad-cam"}})
    store = EpsMapStore(cfg_pkg)
    store.refresh(model, loader, epoch=0, autocast=contextlib.nullcontext)
    model.eval()
    with GradCAM(model=model, target_layers=[model.cam_layer]) as cam:
        maps = cam(input_tensor=loader.images.float() / 255, targets=None)
    expected = importance_mask(torch.from_numpy(np.asarray(maps, dtype=np.float32)))
    assert store.masks.shape == (300, 1, 8, 8) and torch.equal(store.masks, expected) and expected.any()
