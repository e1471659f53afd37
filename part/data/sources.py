"""The datasets' original download sources, and turning their archives into prepared files.

Everything here starts from the files exactly as their publishers distribute them (same names, same
formats, the checksums torchvision checks), so a prepared file can be traced back to bytes anyone can
verify. Machines without internet access pass a *mirror*: any directory, ``file://`` or ``http(s)``
URL holding those same file names. Nothing is ever half-written: downloads land in a temporary file
that is renamed into place only once its checksum is right, and the prepared file is written the
same way (``part.base.files.atomic_write``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import pickle
import struct
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from part.base.files import atomic_write
from part.base.vocabulary import SPLIT_SIZES
from part.data.prepared import SHAPES, PreparedDataset, Split, prepare_digits, save_prepared


class DownloadError(ValueError):
    """A file could not be fetched, arrived truncated or failed its checksum.

    A ``ValueError`` so that the command line reports it as a one-line error, like a bad config.
    """


class ArchiveError(ValueError):
    """A raw file passed its checksum (or was never checked) but its contents are not what the
    publisher's format promises: truncated, corrupted, or a different file under the same name."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    md5: str
    # md5 of the gunzipped bytes. Mirrors may recompress a .gz (Debian's Fashion-MNIST did, with a new
    # timestamp in the gzip header): the file's md5 changes but not one pixel, and this still proves it.
    content_md5: str | None = None


@dataclass(frozen=True)
class Source:
    files: tuple[RemoteFile, ...]
    # The published split sizes (part.base.vocabulary.SPLIT_SIZES): a prepared file with any other count came from a
    # wrong archive.
    train_size: int
    test_size: int


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

SOURCES: dict[str, Source] = {
    "cifar10": Source((
        RemoteFile("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                   "c58f30108f718f92721af3b95e74349a"),
    ), *SPLIT_SIZES["cifar10"]),
    "svhn": Source((
        RemoteFile("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                   "e26dedcc434d2e4c54c9b2d4a06d8373"),
        RemoteFile("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                   "eb5a983be6a315427106f1b164d9cef3"),
    ), *SPLIT_SIZES["svhn"]),
    "tinyimagenet200": Source((
        RemoteFile("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                   "90528d7ca1a48142e341f4ef8d21d0de"),
    ), *SPLIT_SIZES["tinyimagenet200"]),
    "fashion_mnist": Source((
        RemoteFile("train-images-idx3-ubyte.gz", _FASHION_URL + "train-images-idx3-ubyte.gz",
                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        RemoteFile("train-labels-idx1-ubyte.gz", _FASHION_URL + "train-labels-idx1-ubyte.gz",
                   "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        RemoteFile("t10k-images-idx3-ubyte.gz", _FASHION_URL + "t10k-images-idx3-ubyte.gz",
                   "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
                   "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
    ), *SPLIT_SIZES["fashion_mnist"]),
    # Ships inside scikit-learn: nothing to download.
    "digits": Source((), *SPLIT_SIZES["digits"]),
}

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def download(dataset: str, raw_dir: str | Path, mirror: str | Path | None = None,
             sources: dict[str, Source] = SOURCES) -> list[Path]:
    """Make ``raw_dir`` hold every original file of ``dataset`` with its published checksum.

    A file already there and verified is reused without touching the network, so re-running after a
    partial failure only fetches what is missing.
    """
    raw_dir = Path(raw_dir)
    paths = []
    for remote in _source(dataset, sources).files:
        path = raw_dir / remote.name
        if path.is_file():
            if _verified_by(path, remote, _md5(path)):
                paths.append(path)
                continue
            _log(f"{path} fails its checksum; fetching it again")
        url = _url(remote, mirror)
        _log(f"fetching {remote.name} from {url}")
        atomic_write(path, lambda tmp, remote=remote, url=url: _fetch(url, tmp, remote, mirror is None))
        paths.append(path)
    return paths


def prepare(dataset: str, raw_dir: str | Path, sources: dict[str, Source] = SOURCES, *,
            split_seed: int = 0) -> PreparedDataset:
    """Decode the original files in ``raw_dir`` into uint8 (N, C, H, W) images and int64 labels.

    The files are checked against their checksums again (they may have been put there by hand), which
    also makes the checksums recorded in ``meta`` true of the bytes actually decoded. ``split_seed``
    only matters for digits, the one dataset without an official train/test split.
    """
    source = _source(dataset, sources)
    if dataset == "digits":
        ds = prepare_digits(seed=split_seed)
        return _checked(ds.name, source, ds.train, ds.test, ds.meta)
    raw_dir = Path(raw_dir)
    records = [_verify_local(raw_dir / remote.name, remote) for remote in source.files]
    paths = {remote.name: raw_dir / remote.name for remote in source.files}
    train, test, meta = _READERS[dataset](paths)
    return _checked(dataset, source, train, test, {"source": "original archives", "files": records, **meta})


def fetch_and_prepare(dataset: str, raw_dir: str | Path, out_path: str | Path, mirror: str | Path | None = None,
                      sources: dict[str, Source] = SOURCES, *, split_seed: int = 0) -> Path:
    """Download, decode and write the prepared file; any failure leaves no prepared file behind."""
    download(dataset, raw_dir, mirror, sources)
    return save_prepared(out_path, prepare(dataset, raw_dir, sources, split_seed=split_seed))


# --- download -------------------------------------------------------------------------------------

def _source(dataset: str, sources: dict[str, Source]) -> Source:
    if dataset not in sources:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(sources))}")
    return sources[dataset]


def _url(remote: RemoteFile, mirror: str | Path | None) -> str:
    if mirror is None:
        return remote.url
    mirror = str(mirror)
    if "://" not in mirror:
        directory = Path(mirror)
        if not directory.is_dir():
            raise DownloadError(f"mirror {mirror}: no such directory")
        mirror = directory.resolve().as_uri()
    return mirror.rstrip("/") + "/" + remote.name


def _fetch(url: str, tmp: Path, remote: RemoteFile, original: bool) -> None:
    digest = hashlib.md5()
    with open(tmp, "wb") as out:
        for chunk in _chunks(url, remote.name, original):
            out.write(chunk)
            digest.update(chunk)
    actual = digest.hexdigest()
    if not _verified_by(tmp, remote, actual):
        content = (f" (nor does its gunzipped content match md5 {remote.content_md5})"
                   if remote.content_md5 else "")
        raise DownloadError(f"{remote.name}: checksum mismatch for {url}: expected md5 {remote.md5}, got "
                            f"{actual}{content}; the file was not kept: the download is corrupted or the "
                            "source holds a different file under this name")


def _chunks(url: str, name: str, original: bool) -> Iterator[bytes]:
    """The response body, with every way a transfer can fail turned into a DownloadError naming it.

    Errors raised by the consumer (writing to disk) are not caught here: they happen outside the
    generator's frame.
    """
    hint = " (no internet here? pass a mirror holding the original file names)" if original else ""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                yield chunk
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, resets
        raise DownloadError(f"{name}: cannot fetch {url} ({type(err).__name__}: {err}){hint}") from err
    # http.client returns a short body without complaint when the server hangs up early.
    if length is not None and received != int(length):
        raise DownloadError(f"{name}: download from {url} truncated: received {received} of {length} bytes; "
                            "the partial file was not kept")


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _verified_by(path: Path, remote: RemoteFile, md5: str) -> str | None:
    """Which published checksum ``path`` satisfies: "md5", "content_md5", or None."""
    if md5 == remote.md5:
        return "md5"
    if remote.content_md5 is not None:
        digest = hashlib.md5()
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
        except (OSError, EOFError, ValueError):  # not gzip, or truncated/corrupt gzip
            return None
        if digest.hexdigest() == remote.content_md5:
            return "content_md5"
    return None


def _verify_local(path: Path, remote: RemoteFile) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: raw file missing; download it first (part prepare with --raw-dir "
                                "fetches it, from --mirror if given)")
    md5 = _md5(path)
    verified_by = _verified_by(path, remote, md5)
    if verified_by is None:
        raise ArchiveError(f"{path}: md5 {md5} is not the published {remote.md5}"
                           + (f" and its content is not {remote.content_md5}" if remote.content_md5 else "")
                           + "; delete it and download it again")
    record = {"name": remote.name, "url": remote.url, "md5": md5, "verified_by": verified_by}
    if verified_by == "content_md5":
        record["content_md5"] = remote.content_md5
    return record


def _log(message: str) -> None:
    print(f"[part] {message}", file=sys.stderr, flush=True)


# --- decoding the original formats -----------------------------------------------------------------

@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Report any failure to decode ``path`` as one ArchiveError naming it.

    tarfile, zipfile, gzip, pickle, scipy.io and PIL each raise their own zoo of exception types on a
    damaged file (ReadError, BadZipFile, EOFError, zlib.error, UnpicklingError, OSError, ValueError, ...).
    """
    try:
        yield
    except ArchiveError:
        raise
    except Exception as err:
        raise ArchiveError(f"{path}: cannot be read as {what} ({type(err).__name__}: {err}); it is corrupted "
                           "or truncated: delete it and download it again") from err


def _fail(path: Path, message: str) -> ArchiveError:
    return ArchiveError(f"{path}: {message}; it is not the published file: delete it and download it again")


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    # "W": arrays viewing a decompressed buffer are read-only, which torch tensors cannot be.
    return Split(torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
                 torch.from_numpy(np.require(labels, np.int64, ["C", "W"])))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches without letting a pickle call anything but numpy's array rebuilding."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            # numpy 2 renamed numpy.core to numpy._core; ask numpy itself for the function it pickles with.
            return np.empty(0).__reduce__()[0]
        return super().find_class(module, name)


def _read_cifar10(paths: dict[str, Path]) -> tuple[Split, Split, dict[str, Any]]:
    path = paths["cifar-10-python.tar.gz"]
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    wanted = {*train_names, "test_batch", "batches.meta"}
    found: dict[str, dict] = {}

    def batches(names: list[str]) -> Split:
        images, labels = [], []
        for name in names:
            data, y = np.asarray(found[name][b"data"]), np.asarray(found[name][b"labels"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(y) != len(data):
                raise _fail(path, f"{name} holds data {data.dtype} {data.shape} and {len(y)} labels, expected "
                                  "uint8 (n, 3072) and n labels")
            images.append(data.reshape(-1, 3, 32, 32))  # rows are 1024 red, 1024 green, 1024 blue values
            labels.append(y)
        return _split(np.concatenate(images), np.concatenate(labels))

    with _reading(path, "the CIFAR-10 python tarball"):
        with tarfile.open(path, "r:gz") as tar:
            # One pass in archive order: the batches are not stored in name order, and seeking backwards
            # in a gzip stream means decompressing it again from the start.
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and member.name.startswith("cifar-10-batches-py/") and name in wanted:
                    # The batches are Python 2 pickles: their str keys come back as bytes (b"data").
                    found[name] = _CifarUnpickler(tar.extractfile(member), encoding="bytes").load()
        if missing := sorted(wanted - set(found)):
            raise _fail(path, f"no cifar-10-batches-py/{{{', '.join(missing)}}}")
        train, test = batches(train_names), batches(["test_batch"])
        classes = [n.decode() for n in found["batches.meta"][b"label_names"]]
    return train, test, {"classes": classes}


def _read_svhn(paths: dict[str, Path]) -> tuple[Split, Split, dict[str, Any]]:
    from scipy.io import loadmat

    def split(name: str) -> Split:
        path = paths[name]
        with _reading(path, "a MATLAB file"):
            mat = loadmat(path, variable_names=["X", "y"])
            x, y = mat["X"], mat["y"].reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or len(y) != x.shape[3]:
            raise _fail(path, f"X is {x.dtype} {x.shape} with {len(y)} labels, expected uint8 (32, 32, 3, n) "
                              "and n labels")
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise _fail(path, f"labels span {y.min()}..{y.max()}, expected 1..10")
        # X is (H, W, C, N); SVHN labels digit 0 as 10.
        return _split(x.transpose(3, 2, 0, 1), y.astype(np.int64) % 10)

    return split("train_32x32.mat"), split("test_32x32.mat"), {"classes": [str(d) for d in range(10)],
                                                               "label_map": "10 -> 0"}


_TINY = "tiny-imagenet-200/"


def _read_tinyimagenet200(paths: dict[str, Path]) -> tuple[Split, Split, dict[str, Any]]:
    """Train from ``train/<wnid>/images``; the labelled validation set is the test split.

    Class index = position of the wnid in sorted order, as torchvision's ImageFolder gives on
    ``train/`` (the usual TinyImageNet loaders), not the order of ``wnids.txt``.
    """
    path = paths["tiny-imagenet-200.zip"]
    with _reading(path, "the TinyImageNet-200 zip"), zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for required in ("wnids.txt", "val/val_annotations.txt"):
            if _TINY + required not in names:
                raise _fail(path, f"no {_TINY}{required}")
        wnids = sorted(zf.read(_TINY + "wnids.txt").decode().split())
        if len(wnids) != SHAPES["tinyimagenet200"][3] or len(set(wnids)) != len(wnids):
            raise _fail(path, f"wnids.txt lists {len(wnids)} classes ({len(set(wnids))} distinct), expected "
                              f"{SHAPES['tinyimagenet200'][3]}")
        index = {wnid: i for i, wnid in enumerate(wnids)}

        train_members, train_labels = [], []
        for name in sorted(names):
            parts = name[len(_TINY):].split("/")
            if name.startswith(_TINY + "train/") and len(parts) == 4 and parts[2] == "images" \
                    and parts[3].endswith(".JPEG"):
                if parts[1] not in index:
                    raise _fail(path, f"{name}: class {parts[1]} is not in wnids.txt")
                train_members.append(name)
                train_labels.append(index[parts[1]])

        annotations = {}
        for line in zf.read(_TINY + "val/val_annotations.txt").decode().splitlines():
            if line.strip():
                filename, wnid = line.split("\t")[:2]
                if wnid not in index:
                    raise _fail(path, f"val_annotations.txt: {filename} has class {wnid}, not in wnids.txt")
                annotations[filename] = index[wnid]
        val_members = sorted(n for n in names if n.startswith(_TINY + "val/images/") and n.endswith(".JPEG"))
        val_files = {n.rsplit("/", 1)[-1] for n in val_members}
        if val_files != set(annotations):
            raise _fail(path, f"val/images holds {len(val_files)} JPEGs but val_annotations.txt labels "
                              f"{len(annotations)}, {len(val_files ^ set(annotations))} not matched")
        val_labels = [annotations[n.rsplit("/", 1)[-1]] for n in val_members]

        train = _split(_decode_jpegs(zf, train_members, path), np.array(train_labels))
        test = _split(_decode_jpegs(zf, val_members, path), np.array(val_labels))
    return train, test, {"classes": wnids, "class_order": "sorted wnids (torchvision ImageFolder order)",
                         "test_split": "val (labels from val/val_annotations.txt)"}


def _decode_jpegs(zf: zipfile.ZipFile, members: list[str], path: Path) -> np.ndarray:
    from PIL import Image

    c, h, w, _ = SHAPES["tinyimagenet200"]
    out = np.empty((len(members), c, h, w), dtype=np.uint8)  # filled in place: 1.2 GB for the train split
    for i, name in enumerate(members):
        with _reading(path, f"a JPEG ({name})"):
            # Some TinyImageNet JPEGs are grayscale: convert("RGB") repeats their one channel.
            pixels = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))
        if pixels.shape != (h, w, c):
            raise _fail(path, f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, expected {w}x{h}")
        out[i] = pixels.transpose(2, 0, 1)
    return out


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 2049 = labels, 1 dim; 2051 = images, 3 dims), gzipped."""
    with _reading(path, "a gzipped IDX file"), gzip.open(path, "rb") as f:
        data = f.read()
    header = 4 * (1 + dims)
    if len(data) < header:
        raise _fail(path, f"only {len(data)} bytes once gunzipped")
    found, *shape = struct.unpack(f">{1 + dims}i", data[:header])
    if found != magic:
        raise _fail(path, f"IDX magic number {found}, expected {magic}")
    if len(data) != header + int(np.prod(shape)):
        raise _fail(path, f"{len(data) - header} data bytes for shape {tuple(shape)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_fashion_mnist(paths: dict[str, Path]) -> tuple[Split, Split, dict[str, Any]]:
    def split(prefix: str) -> Split:
        images = _read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"], 2051, 3)
        labels = _read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"], 2049, 1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise _fail(paths[f"{prefix}-images-idx3-ubyte.gz"],
                        f"{images.shape} images for {len(labels)} labels, expected (n, 28, 28) and n labels")
        return _split(images[:, None], labels)

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    return split("train"), split("t10k"), {"classes": classes}


_READERS: dict[str, Callable[[dict[str, Path]], tuple[Split, Split, dict[str, Any]]]] = {
    "cifar10": _read_cifar10,
    "svhn": _read_svhn,
    "tinyimagenet200": _read_tinyimagenet200,
    "fashion_mnist": _read_fashion_mnist,
}


def _checked(name: str, source: Source, train: Split, test: Split, meta: dict[str, Any]) -> PreparedDataset:
    c, h, w, k = SHAPES[name]
    files = ", ".join(f.name for f in source.files) or name
    for split_name, split, size in (("train", train, source.train_size), ("test", test, source.test_size)):
        shape = tuple(split.images.shape[1:])
        if len(split) != size or shape != (c, h, w):
            raise ArchiveError(f"{files}: {name} {split_name} split has {len(split)} images of {shape}, expected "
                               f"{size} of {(c, h, w)}: these are not the published files")
        if int(split.labels.min()) < 0 or int(split.labels.max()) >= k:
            raise ArchiveError(f"{files}: {name} {split_name} labels outside [0, {k})")
    return PreparedDataset(name, train, test, k, meta)
