"""The classical models: exact k-NN against scikit-learn, knn-fast and the sklearn MLPs, save/load."""

import json
import sys

import numpy as np
import pytest

from digitlab import errors
from digitlab.lab import models
from digitlab.lab.models.knn import deskew, nearest, smallest


@pytest.fixture(scope="module")
def small(mnist):
    (x, y), (xt, yt) = mnist
    return (x[:3000], y[:3000]), (xt[:500], yt[:500])


def test_classical_models_do_not_import_torch():
    import subprocess

    # Other tests may have imported torch already: check in a fresh interpreter.
    code = ("import sys; from digitlab.lab import models\n"
            "for n in ('knn', 'knn-fast', 'mlp-sklearn', 'mlp-sklearn-tuned'): models.family_class(n)\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_knn_matches_sklearn_exactly(small):
    from sklearn.neighbors import KNeighborsClassifier

    (x, y), (xt, yt) = small
    ours = models.create("knn").fit(x, y)
    theirs = KNeighborsClassifier(n_neighbors=5).fit(x.reshape(len(x), -1) / 255.0, y)
    expected = theirs.predict(xt.reshape(len(xt), -1) / 255.0)
    np.testing.assert_array_equal(ours.predict(xt), expected)
    np.testing.assert_allclose(ours.predict_proba(xt), theirs.predict_proba(xt.reshape(len(xt), -1) / 255.0),
                               atol=1e-6)
    assert ours.score(xt, yt) > 0.85


def test_nearest_is_exact_on_small_points():
    rng = np.random.default_rng(0)
    points, queries = rng.random((300, 7), dtype=np.float32), rng.random((40, 7), dtype=np.float32)
    d, idx = nearest(queries, points, 4, chunk=16)
    brute = ((queries[:, None, :] - points[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1)[:, :4])
    np.testing.assert_allclose(d, np.sort(brute, axis=1)[:, :4], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("columns", [2999, 20000])  # without and with the block-minimum shortcut
def test_smallest_breaks_ties_by_lower_index(columns):
    values = np.random.default_rng(columns).integers(0, 5, (30, columns)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(smallest(values, 7), np.argsort(values, axis=1, kind="stable")[:, :7])


def test_deskew_straightens_a_slanted_bar():
    image = np.zeros((1, 28, 28), np.uint8)
    for row in range(6, 22):  # a bar leaning right: one column further every two rows
        col = 10 + (row - 6) // 2
        image[0, row, col:col + 2] = 255
    straight = deskew(image)[0]
    cols = np.array([np.average(np.arange(28), weights=straight[r]) for r in range(8, 20)])
    assert np.ptp(cols) < 1.0  # upright after deskewing, it leaned 6 columns before
    assert abs(cols.mean() - 14) < 1.0  # and centred


@pytest.mark.slow
def test_knn_fast_round_trip_and_accuracy(small, tmp_path):
    (x, y), (xt, yt) = small
    model = models.create("knn-fast").fit(x[:2500], y[:2500], x[2500:], y[2500:])
    assert 1 <= model.k_ <= model.config.k_max
    assert model.score(xt, yt) > models.create("knn").fit(x, y).score(xt, yt)  # better than plain pixels
    model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    back = models.load(tmp_path / "m")
    assert back.k_ == model.k_
    np.testing.assert_array_equal(back.predict(xt), model.predict(xt))
    np.testing.assert_allclose(back.predict_proba(xt), model.predict_proba(xt))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_sklearn_is_the_study_call_and_round_trips(small, tmp_path):
    from sklearn.neural_network import MLPClassifier

    (x, y), (xt, _) = small
    model = models.create("mlp-sklearn", max_iter=3).fit(x[:1000], y[:1000])
    reference = MLPClassifier(hidden_layer_sizes=(200, 200), activation="relu", alpha=0.3, max_iter=3,
                              random_state=0).fit(x[:1000].reshape(1000, -1).astype(float), y[:1000])
    np.testing.assert_array_equal(model.predict(xt), reference.predict(xt.reshape(len(xt), -1).astype(float)))
    assert [h["epoch"] for h in model.history] == [1, 2, 3]
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["hidden"] == [200, 200]
    back = models.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(xt), model.predict(xt))
    assert back.n_parameters() == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


@pytest.mark.slow
def test_mlp_sklearn_tuned_keeps_the_best_epoch(small, tmp_path):
    (x, y), (xt, yt) = small
    model = models.create("mlp-sklearn-tuned", max_iter=4).fit(x[:2500], y[:2500], x[2500:], y[2500:])
    assert len(model.history) == 4 and {"train_loss", "val_loss", "val_acc", "train_acc"} <= set(model.history[0])
    best = max(model.history, key=lambda h: h["val_acc"])
    assert model.score(x[2500:], y[2500:]) == pytest.approx(best["val_acc"])
    assert model.score(xt, yt) > 0.85
    back = models.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(back.predict(xt), model.predict(xt))


def test_missing_weights_is_a_model_error(small, tmp_path):
    (x, y), _ = small
    models.create("knn").fit(x[:50], y[:50]).save(tmp_path / "m")
    (tmp_path / "m" / "weights.npz").unlink()
    with pytest.raises(errors.ModelError, match="weights.npz missing"):
        models.load(tmp_path / "m")
    (tmp_path / "m" / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(errors.ModelError, match="not a valid weights file"):
        models.load(tmp_path / "m")


def test_a_pickled_weights_file_is_refused_never_unpickled(tmp_path):
    from digitlab.lab.models.base import load_npz

    np.savez(tmp_path / "weights.npz", images=np.array([{"code": "would run on unpickling"}], dtype=object))
    with pytest.raises(errors.ModelError, match="not a valid weights file"):
        load_npz(tmp_path, ("images",))


def test_cli_threads_limits_blas_for_a_classical_family(tmp_path, mnist):
    from threadpoolctl import threadpool_info, threadpool_limits

    from digitlab.cli import main

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"}

    before = {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}
    try:
        threadpool_limits(2, user_api="blas")  # whatever the machine: the command has something to change
        assert blas_threads() == {2}
        assert main(["train", "knn", "--limit", "200", "--threads", "1", "--out", str(tmp_path / "m")]) == 0
        assert blas_threads() == {1}  # numpy's and scipy's OpenBLAS: what the MLPs and k-NN compute with
    finally:
        for pool in threadpool_info():
            threadpool_limits(before.get(pool["filepath"], pool["num_threads"]), user_api=pool["user_api"])
