"""Prepared datasets and a loader that keeps them on the training device.

A prepared dataset is one torch file holding uint8 images (N, C, H, W), int64 labels and a little
metadata, for both splits. It is what every job reads: the workflow's download/prepare step writes
it once, training and evaluation load it with ``weights_only=True`` in a second.

The loader follows airbench rather than ``torch.utils.data``: the whole training set lives on the
device as uint8 (CIFAR-10 is 150 MB), and shuffling, random crops and flips are done there on a
whole batch at once. Each batch carries the dataset indices and the crop/flip it received, because
PART pairs every image with its own ε-map and that map must undergo the same transform.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from part.base import files
from part.base.torchfiles import load_torch, save_torch
from part.base.vocabulary import SHAPES

FORMAT_VERSION = 2  # 2: the tensors' SHA-256 is recorded and verified on load

@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PreparedDataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    meta: dict[str, Any]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


TENSORS = ("train_images", "train_labels", "test_images", "test_labels")

_verified: set[tuple[str, int, int]] = set()
"""(path, size, mtime) of the prepared files whose checksum this process has already verified."""


def tensors_sha256(blob: dict[str, Any]) -> str:
    """SHA-256 over the bytes of a prepared file's tensors (shapes and dtypes included), in a fixed order."""
    h = hashlib.sha256()
    for key in TENSORS:
        t = blob[key].contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(memoryview(t.numpy()).cast("B"))
    return h.hexdigest()


def save_prepared(path: str | Path, ds: PreparedDataset) -> Path:
    _check(ds, Path(path))
    blob = {"format_version": FORMAT_VERSION, "name": ds.name, "num_classes": ds.num_classes, "meta": ds.meta,
            "train_images": ds.train.images.contiguous(), "train_labels": ds.train.labels.contiguous(),
            "test_images": ds.test.images.contiguous(), "test_labels": ds.test.labels.contiguous()}
    return save_torch(path, {**blob, "sha256": tensors_sha256(blob)})


def _verify_checksum(path: Path, blob: dict[str, Any]) -> None:
    """Refuse a prepared file whose tensors changed after ``prepare`` (once per process and file version)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    if tensors_sha256(blob) != blob["sha256"]:
        raise ValueError(f"{path}: its tensors do not match the checksum recorded when it was prepared (the file "
                         f"was modified or damaged); delete it and re-prepare it: `part prepare --dataset "
                         f"{path.stem} --out {path.parent}` (or rerun the workflow)")
    _verified.add(key)


def prepared_file(data_dir: str | Path, dataset: str, what: str) -> Path:
    """The prepared file of ``dataset`` in ``data_dir``; a ``data_dir`` that cannot be a directory is refused
    naming ``what`` (the key or flag that set it), not with a missing file and the advice to prepare one."""
    if (blocker := files.file_in_the_way(data_dir)) is not None:
        raise ValueError(f"{what}: {str(data_dir)!r} cannot be a directory, {blocker} is a file; expected the "
                         "directory of prepared datasets (`part prepare --out DIR`)")
    return Path(data_dir) / f"{dataset}.pt"


def load_prepared(path: str | Path) -> PreparedDataset:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared dataset not found; run `part prepare --dataset "
                                f"{path.stem} --out {path.parent} [--mirror DIR]` (or the workflow) first")
    blob = load_torch(path)
    if not isinstance(blob, dict) or "format_version" not in blob:
        raise ValueError(f"{path}: not a prepared dataset (no format_version)")
    if blob["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {blob['format_version']}, expected {FORMAT_VERSION}; delete it "
                         "and re-prepare it")
    missing = {"name", "num_classes", "meta", "sha256", *TENSORS} - set(blob)
    if missing:
        raise ValueError(f"{path}: not a prepared dataset (missing {sorted(missing)})")
    _verify_checksum(path, blob)
    ds = PreparedDataset(blob["name"], Split(blob["train_images"], blob["train_labels"]),
                         Split(blob["test_images"], blob["test_labels"]), int(blob["num_classes"]), blob["meta"])
    _check(ds, path)
    return ds


def _check(ds: PreparedDataset, path: Path) -> None:
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        x, y = split.images, split.labels
        where = f"{path}: {split_name} split"
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"{where}: images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"{where}: labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if len(y) == 0 or int(y.min()) < 0 or int(y.max()) >= ds.num_classes:
            raise ValueError(f"{where}: labels must lie in [0, {ds.num_classes}) and not be empty")
    if ds.train.images.shape[1:] != ds.test.images.shape[1:]:
        raise ValueError(f"{path}: train and test images differ in shape")
    expected = SHAPES.get(ds.name)
    if expected and (tuple(ds.train.images.shape[1:]), ds.num_classes) != (expected[:3], expected[3]):
        raise ValueError(f"{path}: {ds.name} must have images {expected[:3]} and {expected[3]} classes, got "
                         f"{tuple(ds.train.images.shape[1:])} and {ds.num_classes}")


def prepare_digits(seed: int = 0, test_fraction: float = 0.2) -> PreparedDataset:
    """scikit-learn's 1 797 8x8 digits, split once (stratified, fixed seed) into 1 437 / 360."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are integers 0..16; map them onto 0..255 so that [0, 1] inputs span the full range.
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=test_fraction,
                                              random_state=seed, stratify=digits.target)
    meta = {"source": "sklearn.datasets.load_digits", "split_seed": seed, "test_fraction": test_fraction}
    return PreparedDataset("digits", Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr).long()),
                           Split(torch.from_numpy(x_te), torch.from_numpy(y_te).long()), 10, meta)


HOLD_OUT_STREAM = 3
"""The random stream of the held-out draw (training's streams are 1 and 2, see ``part.training.train``)."""


def hold_out(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """(training rest, held-out) of ``split``: ``size`` images drawn without replacement, seeded by ``seed``
    alone, so every run of a dataset validates on the same images whatever its own seed. Both parts keep
    the dataset's order."""
    if not 0 < size < len(split):
        raise ValueError(f"key 'validation.size': {size} held-out images of a {len(split)}-image training set; "
                         f"expected 0 < size < {len(split)}")
    order = torch.randperm(len(split), generator=make_generator("cpu", seed, HOLD_OUT_STREAM))
    held = torch.zeros(len(split), dtype=torch.bool)
    held[order[:size]] = True
    return Split(split.images[~held], split.labels[~held]), Split(split.images[held], split.labels[held])


def split_sha256(split: Split) -> str:
    """SHA-256 of a split's images and labels: what a run records of the images it validated on."""
    h = hashlib.sha256()
    for t in (split.images, split.labels):
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def derive_seed(*keys: int) -> int:
    """An independent 63-bit seed for each (run seed, epoch, stream): epochs replay exactly on resume."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def make_generator(device: torch.device | str, *keys: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g


@dataclass(frozen=True)
class Augmentation:
    """The random crop (offsets into the zero-padded image) and flip each image of a batch got."""
    padding: int
    top: torch.Tensor | None  # (B,) int64, None when no crop
    left: torch.Tensor | None
    flip: torch.Tensor | None  # (B,) bool, None when no flip

    def __call__(self, t: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
        """Apply this batch's crops and flips to any (B, C, H, W) tensor: images or their ε-masks."""
        if self.top is not None:
            b, c, h, w = t.shape
            p = self.padding
            padded = t.new_full((b, c, h + 2 * p, w + 2 * p), fill)
            padded[:, :, p:p + h, p:p + w] = t
            rows = (self.top[:, None] + torch.arange(h, device=t.device))[:, None, :, None]
            cols = (self.left[:, None] + torch.arange(w, device=t.device))[:, None, None, :]
            t = padded[torch.arange(b, device=t.device)[:, None, None, None],
                       torch.arange(c, device=t.device)[None, :, None, None], rows, cols]
        if self.flip is not None:
            t = torch.where(self.flip[:, None, None, None], t.flip(3), t)
        return t

    def rows(self, rows: slice) -> Augmentation:
        """The crops and flips of rows ``rows`` of the batch."""
        return Augmentation(self.padding, *(None if t is None else t[rows] for t in (self.top, self.left, self.flip)))


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # float (B, C, H, W) in [0, 1]
    y: torch.Tensor  # int64 (B,)
    index: torch.Tensor  # int64 (B,): positions in the dataset
    position: slice  # where this batch lies within its epoch's order
    augmentation: Augmentation
    rows: slice  # this process's rows of the global batch (all of them in a single-process run)
    global_size: int  # images in the global batch


def split_rows(total: int, rank: int, world_size: int) -> slice:
    """Process ``rank``'s contiguous rows of a ``total``-row batch split across ``world_size`` processes
    (sizes differ by at most one, the larger first, as ``torch.tensor_split``)."""
    size, extra = divmod(total, world_size)
    start = rank * size + min(rank, extra)
    return slice(start, start + size + int(rank < extra))


class DeviceLoader:
    """Batches of a uint8 split held on ``device``; shuffles, crops and flips on that device.

    With ``world_size`` > 1 (multi-process training, see :mod:`part.training.distributed`) every process draws the
    order, crops and flips of each global batch of ``batch_size`` images, as one process would, and yields
    only its rows of it.
    """

    def __init__(self, split: Split, batch_size: int, device: torch.device | str, *, shuffle: bool = False,
                 crop_padding: int = 0, flip: bool = False, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.shuffle, self.crop_padding, self.flip = shuffle, crop_padding, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def epoch(self, generator: torch.Generator | None = None, *, plain: bool = False) -> Iterator[Batch]:
        """One pass; ``plain`` gives the images in dataset order without crops or flips."""
        n = len(self.labels)
        randomised = not plain and (self.shuffle or self.crop_padding or self.flip)
        if randomised and generator is None:
            raise ValueError("a shuffling or augmenting loader needs a generator (seeded per epoch)")
        order = (torch.randperm(n, device=self.device, generator=generator) if self.shuffle and not plain
                 else torch.arange(n, device=self.device))
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            aug = Augmentation(0, None, None, None) if plain else self._draw_augmentation(len(index), generator)
            size = len(index)
            rows = split_rows(size, self.rank, self.world_size)
            index, aug = index[rows], aug.rows(rows)
            x = aug(self.images[index]).to(memory_format=self.memory_format).float().div_(255)
            yield Batch(x, self.labels[index], index, slice(start + rows.start, start + rows.stop), aug, rows, size)

    def _draw_augmentation(self, b: int, g: torch.Generator | None) -> Augmentation:
        top = left = flip = None
        if self.crop_padding:
            top, left = torch.randint(0, 2 * self.crop_padding + 1, (2, b), device=self.device, generator=g)
        if self.flip:
            flip = torch.rand(b, device=self.device, generator=g) < 0.5
        return Augmentation(self.crop_padding, top, left, flip)
