import pytest
import torch

from part.data.prepared import (Augmentation, DeviceLoader, PreparedDataset, Split, load_prepared, prepare_digits,
                                save_prepared)


def test_digits_split_is_fixed_and_stratified():
    a, b = prepare_digits(), prepare_digits()
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.dtype == torch.uint8 and a.image_shape == (1, 8, 8)
    assert int(a.train.images.max()) == 255 and int(a.train.images.min()) == 0
    assert torch.bincount(a.test.labels, minlength=10).min() >= 35


def test_prepared_round_trip_and_corruption(tmp_path):
    path = save_prepared(tmp_path / "digits.pt", prepare_digits())
    ds = load_prepared(path)
    assert torch.equal(ds.train.images, prepare_digits().train.images) and ds.num_classes == 10
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="digits.pt: cannot be read.*corrupted or truncated"):
        load_prepared(path)
    with pytest.raises(FileNotFoundError, match="part prepare --dataset cifar10"):
        load_prepared(tmp_path / "cifar10.pt")


def test_invalid_dataset_contents_are_rejected(tmp_path):
    ds = prepare_digits()
    bad = PreparedDataset("digits", Split(ds.train.images, ds.train.labels + 10), ds.test, 10, {})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        save_prepared(tmp_path / "digits.pt", bad)


def test_loader_covers_every_image_once_and_replays_with_the_seed():
    ds = prepare_digits()
    loader = DeviceLoader(ds.train, 100, "cpu", shuffle=True, crop_padding=2, flip=True)
    first = list(loader.epoch(torch.Generator().manual_seed(1)))
    again = list(loader.epoch(torch.Generator().manual_seed(1)))
    index = torch.cat([b.index for b in first])
    assert torch.equal(index.sort().values, torch.arange(len(ds.train)))
    assert all(torch.equal(a.x, b.x) for a, b in zip(first, again))
    assert first[-1].position == slice(1400, 1437) and len(loader) == 15
    assert all(b.x.dtype == torch.float32 and 0 <= b.x.min() and b.x.max() <= 1 for b in first)


def test_plain_epoch_is_dataset_order_without_augmentation():
    ds = prepare_digits()
    loader = DeviceLoader(ds.train, 500, "cpu", shuffle=True, crop_padding=2, flip=True)
    batch = next(loader.epoch(plain=True))
    assert torch.equal(batch.index, torch.arange(500))
    assert torch.equal(batch.x, ds.train.images[:500].float() / 255)


def test_augmentation_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    t = torch.rand(6, 3, 5, 7, generator=g)
    aug = Augmentation(2, torch.tensor([0, 4, 2, 1, 3, 0]), torch.tensor([4, 0, 2, 3, 1, 2]),
                       torch.tensor([True, False, True, False, False, True]))
    out = aug(t, fill=-1.0)
    for i in range(6):
        padded = torch.nn.functional.pad(t[i], (2, 2, 2, 2), value=-1.0)
        ref = padded[:, aug.top[i]:aug.top[i] + 5, aug.left[i]:aug.left[i] + 7]
        if aug.flip[i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref)


def test_a_flipped_image_gets_a_flipped_mask():
    """The ε-map pairing: the same crop/flip applied to an image and to its mask keeps them aligned."""
    ds = prepare_digits()
    loader = DeviceLoader(ds.train, 64, "cpu", shuffle=True, crop_padding=2, flip=True)
    mask = ds.train.images > 128  # a mask that is a function of the image itself
    for batch in loader.epoch(torch.Generator().manual_seed(4)):
        moved = batch.augmentation(mask[batch.index], fill=False)
        assert torch.equal(moved, batch.x > 128 / 255)
