"""The MNIST-format datasets digitlab knows: file names, checksums, where to find or fetch them.

Lookup order for a dataset's folder: an explicit `data_dir`, then `$DIGITLAB_DATA/<name>/`, then
`~/.cache/digitlab/<name>/`, then any system folder a package installs it into. A file passes
verification when either its own SHA-256 or that of its decompressed payload matches, so
recompressed copies (as Debian ships Fashion-MNIST) are accepted.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import ChecksumError, CorruptFileError, CountMismatchError, DataError, MissingDataError
from digitlab.files import atomic_write_bytes

from .idx import GZIP_MAGIC, decode, gunzip

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataFile:
    name: str  # canonical (gzip) file name
    sha256: str | None  # of the published .gz file
    payload_sha256: str | None  # of its decompressed content


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    classes: tuple[str, ...]
    files: dict[str, tuple[DataFile, DataFile]]  # split -> (images, labels)
    counts: dict[str, int]
    urls: tuple[str, ...]  # base URLs, tried in order
    system_dirs: tuple[str, ...] = ()
    label_column: int | None = None  # QMNIST's labels are rows of metadata; column 0 is the digit


DIGITS = tuple("0123456789")

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            name="mnist",
            description="handwritten digits (LeCun, Cortes, Burges)",
            classes=DIGITS,
            files={
                "train": (
                    DataFile("train-images-idx3-ubyte.gz",
                             "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                             "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
                    DataFile("train-labels-idx1-ubyte.gz",
                             "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                             "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                ),
                "test": (
                    DataFile("t10k-images-idx3-ubyte.gz",
                             "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                             "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
                    DataFile("t10k-labels-idx1-ubyte.gz",
                             "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                             "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
                ),
            },
            counts={"train": 60000, "test": 10000},
            urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "http://yann.lecun.com/exdb/mnist/"),
        ),
        Dataset(
            name="fashion-mnist",
            description="Zalando clothing images in MNIST format",
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            files={
                "train": (
                    DataFile("train-images-idx3-ubyte.gz",
                             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                             "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                    DataFile("train-labels-idx1-ubyte.gz",
                             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                             "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                ),
                "test": (
                    DataFile("t10k-images-idx3-ubyte.gz",
                             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                             "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                    DataFile("t10k-labels-idx1-ubyte.gz",
                             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                             "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
                ),
            },
            counts={"train": 60000, "test": 10000},
            urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                  "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
            system_dirs=("/usr/share/datasets/fashion-mnist",),
        ),
        Dataset(
            name="kmnist",
            description="Kuzushiji-MNIST: 10 classes of cursive Japanese characters",
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            files={
                "train": (DataFile("train-images-idx3-ubyte.gz",
                                  "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", None),
                          DataFile("train-labels-idx1-ubyte.gz",
                                  "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", None)),
                "test": (DataFile("t10k-images-idx3-ubyte.gz",
                                  "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", None),
                         DataFile("t10k-labels-idx1-ubyte.gz",
                                  "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", None)),
            },
            counts={"train": 60000, "test": 10000},
            urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        ),
        Dataset(
            name="qmnist",
            description="QMNIST: MNIST reconstructed, with 60,000 test digits",
            classes=DIGITS,
            files={
                "train": (DataFile("qmnist-train-images-idx3-ubyte.gz",
                                  "9e26a7bf1683614e065d7b76460ccd52807165b3f22561fb782bd9f38c52b51d", None),
                          DataFile("qmnist-train-labels-idx2-int.gz",
                                  "2c05dc77f6b916b38e455e97ab129a42a444f3dbef09b278a366f82904e0dd9f", None)),
                "test": (DataFile("qmnist-test-images-idx3-ubyte.gz",
                                  "43fc22bf7498b8fc98de98369d72f752d0deabc280a43a7bcc364ab19e57b375", None),
                         DataFile("qmnist-test-labels-idx2-int.gz",
                                  "9fbcbe594c3766fdf4f0b15c5165dc0d1e57ac604e01422608bb72c906030d06", None)),
            },
            counts={"train": 60000, "test": 60000},
            urls=("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
            label_column=0,
        ),
    ]
}


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for a dataset, in order."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root / name, root]  # accept both the data root and the dataset folder itself
    dirs = []
    if os.environ.get("DIGITLAB_DATA"):
        dirs.append(Path(os.environ["DIGITLAB_DATA"]).expanduser() / name)
    dirs.append(Path.home() / ".cache" / "digitlab" / name)
    dirs.extend(Path(d) for d in get(name).system_dirs)
    return dirs


def file_in(folder: Path, f: DataFile) -> Path | None:
    """The file in `folder`, compressed or not, or None."""
    for p in (folder / f.name, folder / f.name.removesuffix(".gz")):
        if p.is_file():
            return p
    return None


def all_files(ds: Dataset) -> list[DataFile]:
    return [f for split in SPLITS for f in ds.files[split]]


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first candidate folder holding every file of the dataset, or None."""
    ds = get(name)
    for folder in candidate_dirs(name, data_dir):
        if all(file_in(folder, f) for f in all_files(ds)):
            return folder
    return None


def read_checked(path: Path, f: DataFile) -> tuple[np.ndarray, bool]:
    """Decodes one file, each structural defect raising its own error; says if its checksum matches."""
    raw = path.read_bytes()
    if f.sha256 and hashlib.sha256(raw).hexdigest() == f.sha256:
        return decode(raw, str(path)), True
    try:
        payload = gunzip(raw, str(path)) if raw[:2] == GZIP_MAGIC else raw
    except CorruptFileError as e:
        raise ChecksumError(f"{path}: checksum mismatch ({e})") from None
    known = f.sha256 or f.payload_sha256
    ok = not known or hashlib.sha256(payload).hexdigest() == f.payload_sha256
    return decode(payload, str(path)), ok


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None,
               download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of one split, verified."""
    ds = get(name)
    if split not in ds.files:
        raise DataError(f"{name} has no split {split!r}; splits: {', '.join(ds.files)}")
    folder = locate(name, data_dir) or fetch(name, data_dir, download)
    img_file, lbl_file = ds.files[split]
    img_path, lbl_path = file_in(folder, img_file), file_in(folder, lbl_file)
    images, images_ok = read_checked(img_path, img_file)
    labels, labels_ok = read_checked(lbl_path, lbl_file)
    if ds.label_column is not None and labels.ndim == 2:
        labels = labels[:, ds.label_column]
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{img_path}: expected images [N, H, W] and labels [N], "
                        f"got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise CountMismatchError(f"{img_path} holds {len(images):,} images but {lbl_path.name} "
                                 f"holds {len(labels):,} labels")
    if len(images) != ds.counts[split]:
        raise CountMismatchError(f"{img_path}: {len(images):,} images, expected {ds.counts[split]:,}")
    for path, f, ok in ((img_path, img_file, images_ok), (lbl_path, lbl_file, labels_ok)):
        if not ok:
            raise ChecksumError(f"{path}: checksum mismatch (file damaged or not the {f.name} expected)")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def offline() -> bool:
    return os.environ.get("DIGITLAB_OFFLINE", "") not in ("", "0")


def fetch(name: str, data_dir: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Downloads the missing files of a dataset, or explains exactly where to put them."""
    ds = get(name)
    looked = candidate_dirs(name, data_dir)
    target = looked[0]
    if download is None:
        download = not offline()
    errors = []
    if download:
        for f in all_files(ds):
            if file_in(target, f):
                continue
            try:
                _download(ds, f, target / f.name)
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001 - any network failure means "not here"
                errors.append(f"{f.name}: {e}")
                break
        if not errors and locate(name, data_dir):
            return target
    missing = ", ".join(f.name for f in all_files(ds) if not file_in(target, f))
    why = f" (download failed: {errors[0]})" if errors else ""
    raise MissingDataError(
        f"dataset {name!r} not found{why}. Looked in: {', '.join(map(str, looked))}. "
        f"Put {missing} into {target}/ (from {ds.urls[0]}), or set DIGITLAB_DATA to a folder "
        f"holding {name}/, or pass --data-dir"
    )


def _download(ds: Dataset, f: DataFile, dest: Path) -> None:
    last: Exception | None = None
    for base in ds.urls:
        url = base + f.name
        try:
            with urllib.request.urlopen(url, timeout=15) as r:
                total = int(r.headers.get("Content-Length") or 0)
                chunks, got = [], 0
                while chunk := r.read(1 << 16):
                    chunks.append(chunk)
                    got += len(chunk)
                    _progress(f.name, got, total)
                sys.stderr.write("\n")
            data = b"".join(chunks)
        except OSError as e:
            last = e
            continue
        if f.sha256 and hashlib.sha256(data).hexdigest() != f.sha256:
            raise ChecksumError(f"{url}: downloaded file fails its checksum; not saved")
        atomic_write_bytes(dest, data)
        return
    raise OSError(str(last))


def _progress(name: str, got: int, total: int) -> None:
    if total:
        done = int(30 * got / total)
        sys.stderr.write(f"\r{name} [{'#' * done}{'.' * (30 - done)}] {got / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        sys.stderr.write(f"\r{name} {got / 1e6:.1f} MB")
    sys.stderr.flush()
