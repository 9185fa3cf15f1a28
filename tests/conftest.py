import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root holding mnist/: $DIGITLAB_DATA, else ../shared/data beside the repo."""
    root = Path(os.environ.get("DIGITLAB_DATA", REPO.parent / "shared" / "data"))
    if not (root / "mnist").is_dir():
        pytest.fail(f"MNIST not found under {root}; set DIGITLAB_DATA")
    return root


@pytest.fixture(autouse=True)
def _offline_data(monkeypatch, data_root):
    """Tests never download: they read the local copies."""
    monkeypatch.setenv("DIGITLAB_DATA", str(data_root))
    monkeypatch.setenv("DIGITLAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def mnist(data_root):
    from digitlab.data import load

    return load("mnist", "train", data_root), load("mnist", "test", data_root)
