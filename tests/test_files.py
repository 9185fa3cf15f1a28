"""digitlab.files: atomic writes with the usual permissions."""

import os
import stat

import pytest

from digitlab.files import atomic_write_bytes, atomic_write_json, read_json


@pytest.fixture
def umask():
    """Sets the umask for one test and restores it (tests run in one thread)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.hostile("files-umask")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write_bytes(tmp_path / "sub" / "model.bin", b"abc")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"abc"


@pytest.mark.hostile("files-crash-mid-write")
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "card.json", {"accuracy": 0.99})
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write, after the temporary file exists
    assert read_json(path) == {"accuracy": 0.99}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
