"""digitlab's own models: `fast` learns in one short run, `best` trains with augmentation, both round-trip."""

import numpy as np
import pytest

from digitlab.lab.models import create, load

pytestmark = pytest.mark.slow  # every test here trains a network


def test_fast_learns_on_10k_images(mnist, tmp_path):
    (x, y), (x_test, y_test) = mnist
    model = create("fast", seed=1, epochs=2)
    model.fit(x[:10000], y[:10000])
    assert 10_000 < model.n_parameters() < 50_000
    accuracy = model.score(x_test[:5000], y_test[:5000])
    assert accuracy > 0.95, accuracy
    assert model.history[-1]["train_loss"] < model.history[0]["train_loss"]
    again = load(model.save(tmp_path / "fast"))
    assert np.array_equal(again.predict(x_test[:500]), model.predict(x_test[:500]))


def test_best_trains_with_augmentation(mnist):
    (x, y), (x_test, y_test) = mnist
    model = create("best", seed=0, epochs=1, batch_size=64)
    assert model.config.augment > 0 and model.config.label_smoothing > 0
    model.fit(x[:2000], y[:2000])
    proba = model.predict_proba(x_test[:1000])
    assert proba.shape == (1000, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == y_test[:1000]).mean() > 0.5  # 31 steps from scratch: far above chance


def test_ensemble_averages_its_members_and_round_trips(tmp_path, mnist):
    (x, y), (x_test, y_test) = mnist
    ensemble = create("ensemble", family="fast", members=2, seed=3).fit(x[:12000], y[:12000])
    assert [m.config.seed for m in ensemble.members] == [3, 4]
    proba = ensemble.predict_proba(x_test[:500])
    expected = (ensemble.members[0].predict_proba(x_test[:500]) + ensemble.members[1].predict_proba(x_test[:500])) / 2
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert ensemble.score(x_test[:500], y_test[:500]) > 0.85
    back = load(ensemble.save(tmp_path / "ens"))
    np.testing.assert_array_equal(back.predict_proba(x_test[:500]), proba)
