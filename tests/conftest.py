import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (-n auto): each computes on one thread, so torch's and OpenMP's threads
    # (here and in the subprocesses tests start) never outnumber the cores and spin against each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# absolute: tests run commands in other folders (the docs' examples), where a relative path means nothing
ROOT = Path(os.environ.get("DIGITLAB_DATA", REPO.parent / "shared" / "data")).resolve()


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
        pytest.fail(f"this test needs MNIST, and {ROOT}/mnist/ does not exist: set DIGITLAB_DATA to a folder "
                    f"holding mnist/ (or fill {ROOT}/mnist/); `DIGITLAB_DATA=FOLDER digitlab data verify mnist` "
                    f"downloads it there when online (README, 'Tests and MNIST')", pytrace=False)
    return ROOT


@pytest.fixture(scope="session")
def mnist(data_root):
    from digitlab.data import load

    return load("mnist", "train", data_root), load("mnist", "test", data_root)


# ---------------------------------------------------------------------------- hostile cases
# Tests claim cases of digitlab.testing.hostile with @pytest.mark.hostile(id, ...) or a parameter
# named `case`; scripts/reliability_table.py runs them with DIGITLAB_HOSTILE_LOG set and writes
# each case's outcome into RELIABILITY.md.
def hostile_ids(item) -> list[str]:
    from digitlab.testing.hostile import Case

    ids = [i for mark in item.iter_markers("hostile") for i in mark.args]
    case = getattr(item, "callspec", None) and item.callspec.params.get("case")
    if isinstance(case, Case):
        ids.append(case.id)
    return ids


def pytest_collection_modifyitems(config, items):
    for item in items:
        ids = hostile_ids(item)
        if ids and not any(True for _ in item.iter_markers("hostile")):
            item.add_marker(pytest.mark.hostile(*ids))  # so `-m hostile` selects parametrized cases too
        item.user_properties.extend(("hostile", i) for i in ids)
        for case_id in ids:  # every claim, run or not (deselected slow tests show as "not run")
            _hostile_log(case_id, item.nodeid, "collected")


def pytest_runtest_logreport(report):
    if report.when == "call" or not report.passed:
        for key, case_id in report.user_properties:
            if key == "hostile":
                _hostile_log(case_id, report.nodeid, report.outcome)


def _hostile_log(case_id: str, test: str, outcome: str) -> None:
    log = os.environ.get("DIGITLAB_HOSTILE_LOG")
    if log:
        import json

        with open(log, "a", encoding="utf-8") as f:  # a test-run log for the script, not a digitlab output
            f.write(json.dumps({"case": case_id, "test": test, "outcome": outcome}) + "\n")
