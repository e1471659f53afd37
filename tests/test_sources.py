"""Download → verify → prepare, end to end, on small archives in the publishers' real formats.

The real CIFAR-10, SVHN and TinyImageNet archives cannot be fetched here, so the tests build tiny
archives with the same layout (a tarball of Python 2 pickles, MATLAB files, a zip of JPEGs, gzipped IDX
files), serve them from a directory, a ``file://`` URL and an HTTP server on 127.0.0.1, and check that
every pixel and label comes out where it went in. Fashion-MNIST is also checked against Debian's copy
of the real files with the real checksum table.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import tarfile
import threading
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from part.data.prepared import load_prepared
from part.data.sources import (SOURCES, ArchiveError, DownloadError, RemoteFile, Source, download, fetch_and_prepare,
                               prepare)

DATASETS = ("cifar10", "svhn", "tinyimagenet200", "fashion_mnist")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Py2Pickler(pickle._Pickler):
    """Pickles str and bytes as Python 2 ``str`` opcodes, as the CIFAR-10 batches were written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        head = (pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256
                else pickle.BINSTRING + struct.pack("<i", len(raw)))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the real batches) named its module numpy.core, numpy 2 names it numpy._core.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_tarball(batches: dict[str, dict]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, batch in batches.items():
            add_bytes(tar, f"cifar-10-batches-py/{name}", batch if isinstance(batch, bytes) else py2_pickle(batch))
    return buf.getvalue()


def idx_gz(array: np.ndarray, magic: int, mtime: int = 0) -> bytes:
    raw = struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()
    return gzip.compress(raw, mtime=mtime)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """(C, H, W) RGB pixels of a JPEG, as any reader should see them."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1)


@dataclass
class Archives:
    mirror: Path
    sources: dict[str, Source]
    expected: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # x_train, y_train, x_test, y_test
    grayscale_val: str

    def remote(self, dataset: str, name: str) -> RemoteFile:
        return next(f for f in self.sources[dataset].files if f.name == name)


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Archives:
    rng = np.random.default_rng(0)
    mirror = tmp_path_factory.mktemp("mirror")
    files: dict[str, dict[str, bytes]] = {}
    expected = {}

    # CIFAR-10: five train batches and a test batch, stored in the real tarball's (unsorted) member order.
    sizes = {"data_batch_1": 3, "data_batch_2": 2, "data_batch_3": 3, "data_batch_4": 1, "data_batch_5": 2,
             "test_batch": 4}
    batches = {name: {"batch_label": f"batch {name}", "labels": [int(v) for v in rng.integers(0, 10, n)],
                      "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                      "filenames": [f"img_{i}.png" for i in range(n)]} for name, n in sizes.items()}
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"], "num_cases_per_batch": 10000, "num_vis": 3072}
    order = ["data_batch_4", "readme.html", "test_batch", "data_batch_3", "batches.meta", "data_batch_2",
             "data_batch_5", "data_batch_1"]
    members = {**batches, "batches.meta": meta, "readme.html": b"<html></html>"}
    files["cifar10"] = {"cifar-10-python.tar.gz": cifar_tarball({name: members[name] for name in order})}
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    expected["cifar10"] = (np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32),
                           np.concatenate([b["labels"] for b in train]),
                           batches["test_batch"]["data"].reshape(-1, 3, 32, 32),
                           np.array(batches["test_batch"]["labels"]))

    # SVHN: X is (32, 32, 3, N) and digit 0 is labelled 10.
    svhn = {}
    for name, n in (("train_32x32.mat", 5), ("test_32x32.mat", 3)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = np.array([10, 1, 2, 9, 10][:n], dtype=np.uint8)
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"X": x.transpose(2, 3, 1, 0), "y": y[:, None]})
        svhn[name] = (buf.getvalue(), x, y % 10)
    files["svhn"] = {name: v[0] for name, v in svhn.items()}
    expected["svhn"] = (*svhn["train_32x32.mat"][1:], *svhn["test_32x32.mat"][1:])

    # TinyImageNet-200: 200 classes (wnids.txt unsorted), 2 train JPEGs each, 6 labelled val JPEGs (one
    # grayscale), an unlabelled test folder that must be ignored.
    wnids = [f"n{v:08d}" for v in rng.choice(10**8, 200, replace=False)]
    index = {w: i for i, w in enumerate(sorted(wnids))}
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None]  # varies along the width only

    def picture(gray: bool = False) -> np.ndarray:
        colour = rng.integers(0, 128, (1, 1, 1 if gray else 3))
        pixels = (np.broadcast_to(ramp // 2, (64, 64, 1)) + colour).astype(np.uint8)
        return pixels[:, :, 0] if gray else pixels

    buf = io.BytesIO()
    train_items, val_items, annotations = {}, {}, []
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        zf.writestr("tiny-imagenet-200/words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids))
        for w in wnids:
            zf.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", f"{w}_0.JPEG\t0\t0\t63\t63\n")
            for i in range(2):
                name = f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG"
                data = jpeg(picture())
                zf.writestr(name, data)
                train_items[name] = (decoded(data), index[w])
        for i in range(6):
            w = wnids[int(rng.integers(0, 200))]
            data = jpeg(picture(gray=(i == 3)))
            zf.writestr(f"tiny-imagenet-200/val/images/val_{i}.JPEG", data)
            annotations.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
            val_items[f"tiny-imagenet-200/val/images/val_{i}.JPEG"] = (decoded(data), index[w])
        zf.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(annotations) + "\n")
        zf.writestr("tiny-imagenet-200/test/images/test_0.JPEG", jpeg(picture()))
    files["tinyimagenet200"] = {"tiny-imagenet-200.zip": buf.getvalue()}

    def stacked(items):
        ordered = [items[k] for k in sorted(items)]
        return np.stack([p for p, _ in ordered]), np.array([y for _, y in ordered])

    expected["tinyimagenet200"] = (*stacked(train_items), *stacked(val_items))

    # Fashion-MNIST: gzipped IDX files.
    fashion = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        fashion[prefix] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))
    files["fashion_mnist"] = {}
    content_md5 = {}
    for prefix, (x, y) in fashion.items():
        for kind, array, magic in (("images-idx3", x, 2051), ("labels-idx1", y, 2049)):
            data = idx_gz(array, magic)
            files["fashion_mnist"][f"{prefix}-{kind}-ubyte.gz"] = data
            content_md5[f"{prefix}-{kind}-ubyte.gz"] = md5(gzip.decompress(data))
    expected["fashion_mnist"] = (fashion["train"][0][:, None], fashion["train"][1],
                                 fashion["t10k"][0][:, None], fashion["t10k"][1])

    sources = {}
    for dataset, contents in files.items():
        for name, data in contents.items():
            (mirror / name).write_bytes(data)
        remotes = tuple(RemoteFile(name, f"https://publisher.invalid/{name}", md5(data), content_md5.get(name))
                        for name, data in contents.items())
        sources[dataset] = Source(remotes, len(expected[dataset][1]), len(expected[dataset][3]))
    return Archives(mirror, sources, expected, "tiny-imagenet-200/val/images/val_3.JPEG")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; under ``/short/`` it promises the whole file but hangs up halfway."""

    def do_GET(self):
        if not self.path.startswith("/short/"):
            return super().do_GET()
        data = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Start HTTP servers on 127.0.0.1 (ephemeral port); returns (base URL, stop)."""
    servers = []

    def start(directory: Path):
        handler = functools.partial(_Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        state = {"running": True}

        def stop():
            if state["running"]:
                state["running"] = False
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)

        servers.append(stop)
        return f"http://127.0.0.1:{server.server_address[1]}", stop

    yield start
    for stop in servers:
        stop()


def mirror_for(kind: str, archives: Archives, serve) -> str:
    if kind == "dir":
        return str(archives.mirror)
    if kind == "file_url":
        return archives.mirror.as_uri()
    return serve(archives.mirror)[0] + "/"


def assert_matches(ds, expected) -> None:
    x_train, y_train, x_test, y_test = expected
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.train.images, torch.from_numpy(np.ascontiguousarray(x_train)))
    assert torch.equal(ds.train.labels, torch.from_numpy(y_train.astype(np.int64)))
    assert torch.equal(ds.test.images, torch.from_numpy(np.ascontiguousarray(x_test)))
    assert torch.equal(ds.test.labels, torch.from_numpy(y_test.astype(np.int64)))


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")] if directory.exists() else True


@pytest.mark.parametrize("kind", ["dir", "file_url", "http"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_fetch_and_prepare_reproduces_every_pixel_and_label(dataset, kind, archives, serve, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "prepared" / f"{dataset}.pt"
    path = fetch_and_prepare(dataset, raw, out, mirror_for(kind, archives, serve), archives.sources)
    assert path == out and no_temp_files(raw) and no_temp_files(out.parent)
    for remote in archives.sources[dataset].files:
        assert (raw / remote.name).read_bytes() == (archives.mirror / remote.name).read_bytes()
    ds = load_prepared(out)
    assert ds.name == dataset
    assert_matches(ds, archives.expected[dataset])
    assert [(f["name"], f["md5"], f["verified_by"]) for f in ds.meta["files"]] == \
        [(f.name, f.md5, "md5") for f in archives.sources[dataset].files]


def test_svhn_label_10_is_digit_0(archives, tmp_path):
    download("svhn", tmp_path, archives.mirror, archives.sources)
    ds = prepare("svhn", tmp_path, archives.sources)
    assert ds.train.labels.tolist() == [0, 1, 2, 9, 0] and ds.test.labels.tolist() == [0, 1, 2]


def test_tinyimagenet_uses_sorted_wnids_and_val_annotations(archives, tmp_path):
    download("tinyimagenet200", tmp_path, archives.mirror, archives.sources)
    ds = prepare("tinyimagenet200", tmp_path, archives.sources)
    assert ds.num_classes == 200 and ds.meta["classes"] == sorted(ds.meta["classes"])
    assert ds.image_shape == (3, 64, 64) and len(ds.train) == 400 and len(ds.test) == 6
    wnid_of = dict(line.split("\t")[:2] for line in zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip")
                   .read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines())
    assert [ds.meta["classes"][y] for y in ds.test.labels.tolist()] == [wnid_of[f"val_{i}.JPEG"] for i in range(6)]
    gray = ds.test.images[3]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # Orientation: the pictures vary along the width only, as drawn.
    assert (ds.train.images.float().diff(dim=3).mean() > 1) and ds.train.images.float().diff(dim=2).abs().mean() < 2


def test_second_download_reuses_verified_files_without_network(archives, serve, tmp_path):
    url, stop = serve(archives.mirror)
    first = download("cifar10", tmp_path / "raw", url, archives.sources)
    stamp = [p.stat().st_mtime_ns for p in first]
    stop()
    assert download("cifar10", tmp_path / "raw", url, archives.sources) == first
    mirror = tmp_path / "mirror"
    shutil.copytree(archives.mirror, mirror)
    download("svhn", tmp_path / "raw", mirror, archives.sources)
    shutil.rmtree(mirror)
    download("svhn", tmp_path / "raw", mirror, archives.sources)
    assert [p.stat().st_mtime_ns for p in first] == stamp


def test_a_bad_file_in_raw_dir_is_fetched_again(archives, tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    (path,) = download("cifar10", tmp_path, archives.mirror, archives.sources)
    assert path.read_bytes() == (archives.mirror / path.name).read_bytes()


@pytest.mark.parametrize("kind", ["dir", "http"])
def test_checksum_mismatch_names_everything_and_keeps_nothing(kind, archives, serve, tmp_path):
    good = archives.remote("cifar10", "cifar-10-python.tar.gz")
    sources = {"cifar10": replace(archives.sources["cifar10"], files=(replace(good, md5="0" * 32),))}
    mirror = mirror_for(kind, archives, serve)
    with pytest.raises(DownloadError) as err:
        download("cifar10", tmp_path, mirror, sources)
    url = (archives.mirror.resolve().as_uri() if kind == "dir" else mirror.rstrip("/")) + "/" + good.name
    assert str(err.value).startswith(f"{good.name}: checksum mismatch for {url}: expected md5 {'0' * 32}, "
                                     f"got {good.md5}")
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_is_an_error_and_keeps_nothing(archives, serve, tmp_path):
    url, _ = serve(archives.mirror)
    with pytest.raises(DownloadError, match=r"cifar-10-python.tar.gz: download from .*/short/.* truncated"):
        download("cifar10", tmp_path, url + "/short", archives.sources)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_on_mirror_is_a_clear_error(archives, serve, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    url, _ = serve(empty)
    with pytest.raises(DownloadError, match=r"train_32x32\.mat: cannot fetch "
                                            r"http://127\.0\.0\.1:\d+/train_32x32\.mat \(HTTPError: HTTP Error 404"):
        download("svhn", tmp_path / "raw", url, archives.sources)
    with pytest.raises(DownloadError, match="no such directory"):
        download("svhn", tmp_path / "raw", tmp_path / "nowhere", archives.sources)
    assert no_temp_files(tmp_path / "raw")


@pytest.mark.parametrize("dataset", DATASETS)
def test_truncated_archive_with_matching_md5_fails_format_check(dataset, archives, tmp_path):
    """The md5 is that of the cut bytes, so only the decoder can notice; no prepared file may appear."""
    victim = archives.sources[dataset].files[0]
    mirror = tmp_path / "mirror"
    shutil.copytree(archives.mirror, mirror)
    data = (mirror / victim.name).read_bytes()[: len((mirror / victim.name).read_bytes()) // 2]
    (mirror / victim.name).write_bytes(data)
    files = tuple(replace(f, md5=md5(data)) if f.name == victim.name else f for f in archives.sources[dataset].files)
    sources = {dataset: replace(archives.sources[dataset], files=files)}
    out = tmp_path / "prepared" / f"{dataset}.pt"
    with pytest.raises(ArchiveError, match=rf"{victim.name}: .*(corrupted or truncated|not the published)"):
        fetch_and_prepare(dataset, tmp_path / "raw", out, mirror, sources)
    assert not out.exists() and no_temp_files(out.parent)


def test_wrong_counts_are_rejected(archives, tmp_path):
    sources = {"svhn": replace(archives.sources["svhn"], train_size=73_257)}
    download("svhn", tmp_path, archives.mirror, sources)
    with pytest.raises(ArchiveError, match=r"svhn train split has 5 images .* expected 73257"):
        prepare("svhn", tmp_path, sources)


def test_cifar_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    data = cifar_tarball({"data_batch_1": py2_pickle({"data": Evil()})})
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(data)
    remote = RemoteFile("cifar-10-python.tar.gz", "https://publisher.invalid/x", md5(data))
    with pytest.raises(ArchiveError, match="refusing to load global (posix|os).system"):
        prepare("cifar10", tmp_path, {"cifar10": Source((remote,), 1, 1)})


def test_recompressed_gzip_is_accepted_by_its_content(archives, tmp_path):
    """A mirror that re-gzipped a file (new header timestamp) still holds the published bytes."""
    mirror = tmp_path / "mirror"
    shutil.copytree(archives.mirror, mirror)
    name = "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress((mirror / name).read_bytes())
    (mirror / name).write_bytes(gzip.compress(raw, mtime=1_591_347_949))
    download("fashion_mnist", tmp_path / "raw", mirror, archives.sources)
    ds = prepare("fashion_mnist", tmp_path / "raw", archives.sources)
    record = next(f for f in ds.meta["files"] if f["name"] == name)
    assert record["verified_by"] == "content_md5" and record["md5"] != archives.remote("fashion_mnist", name).md5
    assert_matches(ds, archives.expected["fashion_mnist"])
    # Different content under the same name is still refused.
    (mirror / name).write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    with pytest.raises(DownloadError, match="nor does its gunzipped content match"):
        download("fashion_mnist", tmp_path / "raw2", mirror, archives.sources)


def test_digits_need_no_download(tmp_path):
    assert download("digits", tmp_path) == []
    ds = prepare("digits", tmp_path)
    assert (len(ds.train), len(ds.test), ds.image_shape) == (1437, 360, (1, 8, 8))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        download("mnist", tmp_path)


def test_fashion_mnist_from_debian_with_the_real_checksums(tmp_path):
    if not DEBIAN_FASHION.is_dir():
        if os.environ.get("PART_REQUIRE_FASHION_MNIST") == "1":
            pytest.fail(f"{DEBIAN_FASHION} missing: apt-get install dataset-fashion-mnist")
        pytest.skip(f"{DEBIAN_FASHION} missing (apt-get install dataset-fashion-mnist)")
    out = fetch_and_prepare("fashion_mnist", tmp_path / "raw", tmp_path / "fashion_mnist.pt", DEBIAN_FASHION)
    ds = load_prepared(out)
    assert (len(ds.train), len(ds.test), ds.image_shape, ds.num_classes) == (60_000, 10_000, (1, 28, 28), 10)
    assert sorted(ds.train.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(ds.test.labels).tolist() == [1000] * 10
    assert {f["name"] for f in ds.meta["files"]} == {f.name for f in SOURCES["fashion_mnist"].files}
