import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


ROOT = Path(os.environ.get("DIGITLAB_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _offline_data(monkeypatch):
    """Tests never download: they read the local copies (if a test needs one, `data_root` checks it is there)."""
    monkeypatch.setenv("DIGITLAB_DATA", str(ROOT))
    monkeypatch.setenv("DIGITLAB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root holding mnist/: $DIGITLAB_DATA, else ../shared/data beside the repo. Only the tests
    that use MNIST ask for it, so the others run (and pass) without it."""
    if not (ROOT / "mnist").is_dir():
        pytest.fail(f"MNIST not found under {ROOT}; set DIGITLAB_DATA")
    return ROOT


@pytest.fixture(scope="session")
def mnist(data_root):
    from digitlab.data import load

    return load("mnist", "train", data_root), load("mnist", "test", data_root)
