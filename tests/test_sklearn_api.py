"""The lab's models as scikit-learn estimators: clone, get/set_params, Pipeline, GridSearchCV,
cross_val_score, and scikit-learn's own estimator checks."""

import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from digitlab.lab import models
from digitlab.lab.models.knn import KNN, KNNFast
from digitlab.lab.models.sklearn_mlp import SklearnMLP, SklearnMLPConfig, TunedSklearnMLP

CLASSICAL = ("knn", "knn-fast", "mlp-sklearn", "mlp-sklearn-tuned")


# scikit-learn's checks feed 2 to 10 generic features, not 28x28 images, so the estimators run with
# their image-only step off: deskew=False (deskewing shears a 28x28 picture) and, for the tuned MLP,
# scale=1.0 (1/255 is for 0-255 pixels: on the checks' unit-sized features the network learns too
# little in 40 epochs to pass check_classifiers_train's 83%). Everything else is the default model;
# max_iter=20 keeps the MLP's checks to seconds. No check is skipped or expected to fail (apart
# from check_array_api_input, which scikit-learn itself skips unless SCIPY_ARRAY_API is set).
# test_image_only_settings_refuse_other_data covers the deskew=True defaults.
@parametrize_with_checks([KNN(), KNNFast(deskew=False)])
def test_scikit_learn_estimator_checks_knn(estimator, check):
    check(estimator)


@pytest.mark.slow  # about 15 s: each check trains a network, several of them on 180 samples
@parametrize_with_checks([SklearnMLP(max_iter=20), TunedSklearnMLP(deskew=False, scale=1.0, max_iter=20)])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:Got `batch_size` less than 1 or larger than sample size")
def test_scikit_learn_estimator_checks_mlp(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits(mnist):
    (x, y), (xt, yt) = mnist
    return (x[:600], y[:600]), (xt[:200], yt[:200])


@pytest.mark.parametrize("name", CLASSICAL)
def test_init_stores_settings_only_and_clone_works(name):
    model = models.create(name)
    params = model.get_params()
    assert set(vars(model)) == set(params)  # nothing computed in __init__, nothing fitted yet
    assert params == dataclasses.asdict(model.config)  # config.json's settings are the parameters
    copy = clone(model)
    assert copy.get_params() == params and copy is not model
    first = next(iter(params))
    assert model.set_params(**{first: params[first]}) is model


@pytest.mark.parametrize("name", CLASSICAL)
def test_unfitted_model_raises_not_fitted(name):
    model = models.create(name)
    assert not [a for a in vars(model) if a.endswith("_")]  # e.g. no coefs_ before fit
    with pytest.raises(NotFittedError):
        model.predict(np.zeros((1, 784), np.uint8))


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_flat_and_square_images_give_the_same_model(name, digits):
    (x, y), (xt, _) = digits
    settings = {"max_iter": 3} if "mlp" in name else {}
    square = models.create(name, **settings).fit(x, y)
    flat = models.create(name, **settings).fit(x.reshape(len(x), -1), y)
    assert square.n_features_in_ == flat.n_features_in_ == 784
    np.testing.assert_array_equal(square.predict(xt), flat.predict(xt.reshape(len(xt), -1)))
    np.testing.assert_array_equal(square.predict(xt), flat.predict(xt))
    np.testing.assert_array_equal(square.classes_, np.arange(10))


@pytest.mark.parametrize("name", ("knn-fast", "mlp-sklearn-tuned"))
def test_image_only_settings_refuse_other_data(name):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="expected images of 28x28 pixels"):
        models.create(name).fit(rng.random((40, 5)), rng.integers(0, 2, 40))


def test_fit_leaves_the_callers_config_alone(digits):
    (x, y), _ = digits
    config = SklearnMLPConfig(hidden=[16], max_iter=2)  # a list, as config.json gives it back
    model = SklearnMLP.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    assert config.hidden == [16] and model.hidden == [16]
    assert [w.shape for w in model.coefs_] == [(784, 16), (16, 10)]


def test_grid_search_over_k_inside_a_pipeline(digits):
    (x, y), (xt, yt) = digits
    # a Pipeline step before the model: images arrive flattened, as any scikit-learn transformer passes them
    pipe = Pipeline([("flatten", FunctionTransformer(lambda a: a.reshape(len(a), -1))), ("knn", models.create("knn"))])
    search = GridSearchCV(pipe, {"knn__k": [1, 3, 5, 7]}, cv=3).fit(x, y)
    assert search.best_params_["knn__k"] in (1, 3, 5, 7)
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert search.best_estimator_.named_steps["knn"].k == search.best_params_["knn__k"]
    assert search.score(xt, yt) > 0.75
    np.testing.assert_array_equal(search.predict(xt), search.best_estimator_.predict(xt))


def test_neural_family_works_with_cross_val_score(digits):
    pytest.importorskip("torch")
    (x, y), _ = digits
    mlp = models.create("mlp", epochs=2, batch_size=16, hidden=32)
    copy = clone(mlp)
    assert copy.config == mlp.config and copy.config is not mlp.config
    scores = cross_val_score(mlp, x, y, cv=2)
    assert scores.shape == (2,) and (scores > 0.5).all()  # 2 epochs on 300 images: well above chance
    assert not hasattr(mlp, "history_")  # cross_val_score fitted clones, not the model itself
