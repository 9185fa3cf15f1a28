import gzip
import shutil

import numpy as np
import pytest

from digitlab import errors
from digitlab.cli import main
from digitlab.data import load, normalization, read_idx, train_val_split, write_idx

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype is np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_real_mnist_counts(mnist):
    (x, y), (xt, yt) = mnist
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert xt.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == TRAIN_COUNTS
    assert np.bincount(yt).tolist() == TEST_COUNTS
    mean, std = normalization(x)
    assert mean == pytest.approx(0.1307, abs=1e-4) and std == pytest.approx(0.3081, abs=1e-4)


def test_train_val_split_is_seeded(mnist):
    (x, y), _ = mnist
    (a, ay), (b, by) = train_val_split(x, y, 5000, seed=1)
    (_, ay2), (_, by2) = train_val_split(x, y, 5000, seed=1)
    assert len(b) == 5000 and len(a) == 55000
    np.testing.assert_array_equal(by, by2)
    np.testing.assert_array_equal(ay, ay2)


@pytest.fixture
def mnist_copy(tmp_path, data_root):
    folder = tmp_path / "mnist"
    shutil.copytree(data_root / "mnist", folder)
    return folder


def _corrupt(kind, path):
    raw = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "flipped":
        b = bytearray(raw)
        b[len(b) // 2] ^= 0xFF
        path.write_bytes(bytes(b))
    elif kind == "magic":
        payload = bytearray(gzip.decompress(raw))
        payload[2:4] = b"\x07\x07"
        path.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    elif kind == "huge-header":
        payload = bytearray(gzip.decompress(raw))
        payload[4:8] = (10**9).to_bytes(4, "big")
        path.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    elif kind == "count":
        payload = gzip.decompress(raw)
        header = bytearray(payload[:16])
        header[4:8] = (9999).to_bytes(4, "big")
        path.write_bytes(gzip.compress(bytes(header) + payload[16 : 16 + 9999 * 784], compresslevel=1))


@pytest.mark.parametrize(
    "kind, error, words",
    [
        ("truncated", errors.TruncatedFileError, "truncated"),
        ("flipped", errors.ChecksumError, "checksum mismatch"),
        ("magic", errors.BadMagicError, "wrong magic"),
        ("huge-header", errors.HeaderMismatchError, "header says"),
        ("count", errors.CountMismatchError, "9,999 images but"),
    ],
)
def test_each_defect_has_its_own_error(mnist_copy, kind, error, words, capsys):
    _corrupt(kind, mnist_copy / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(error, match=words) as info:
        load("mnist", "test", mnist_copy)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    # and the CLI turns it into one line naming the file, exit code non-zero
    assert main(["data", "verify", "mnist", "--data-dir", str(mnist_copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t10k-images-idx3-ubyte.gz" in err and words in err


def test_recompressed_copy_passes_by_payload(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=9, mtime=0))
    _, labels = load("mnist", "test", mnist_copy)
    assert np.bincount(labels).tolist() == TEST_COUNTS


def test_uncompressed_copy_is_found(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    (mnist_copy / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    assert len(load("mnist", "test", mnist_copy)[1]) == 10000


def test_missing_data_says_where_to_put_files(tmp_path):
    with pytest.raises(errors.MissingDataError) as info:
        load("kmnist", "train", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(errors.DataError, match="unknown dataset 'nope'"):
        load("nope")
@pytest.mark.usefixtures("data_root")  # the CLI reads MNIST: a clear failure when it is absent
def test_cli_data_commands(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "fashion-mnist" in out and "qmnist" in out
    assert main(["data", "verify", "mnist"]) == 0
    out = capsys.readouterr().out
    assert " ".join(map(str, TEST_COUNTS)) in out and "OK" in out
    png = tmp_path / "seven.png"
    assert main(["data", "show", "mnist", "--split", "test", "--index", "0", "--out", str(png)]) == 0
    from PIL import Image

    assert Image.open(png).size == (28, 28)
    assert "label 7" in capsys.readouterr().out
    assert main(["data", "show", "mnist", "--index", "10000", "--out", str(png)]) == 1
    assert "out of range" in capsys.readouterr().err


COMMANDS = ["data list", "data verify", "data show", "train", "lr-find", "evaluate", "report", "benchmark",
            "export", "predict", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_help_for_every_command(command, capsys):
    """`digitlab COMMAND --help` prints its usage and exits 0, and `digitlab --help` lists it."""
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: digitlab {command}")
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and command.split()[0] in capsys.readouterr().out
