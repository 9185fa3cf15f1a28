"""Metrics on hand-made arrays (exact numbers), the overfitting verdict, and the evaluate/report/benchmark CLI."""

import json

import numpy as np
import pytest

from digitlab.cli import main
from digitlab.lab import models
from digitlab.lab.evaluate import interpret, overfitting

# 6 examples, 3 classes. Predictions (argmax): 0, 0, 1, 1, 2, 1 for labels 0, 0, 0, 1, 2, 2.
PROBA = np.array([[0.9, 0.05, 0.05],
                  [0.6, 0.3, 0.1],
                  [0.2, 0.7, 0.1],
                  [0.1, 0.8, 0.1],
                  [0.1, 0.1, 0.8],
                  [0.3, 0.5, 0.2]])
LABELS = np.array([0, 0, 0, 1, 2, 2])


def test_interpret_exact_numbers():
    i = interpret(PROBA, LABELS, ["a", "b", "c"], top_k=3)
    assert i.n == 6 and i.n_incorrect == 2
    assert i.accuracy == pytest.approx(4 / 6)
    assert i.confusion_matrix == [[2, 1, 0], [0, 1, 0], [0, 1, 1]]
    # precision a=2/2, b=1/3, c=1/1; recall a=2/3, b=1/1, c=1/2
    p = {r["class"]: r for r in i.per_class}
    assert p["a"]["precision"] == pytest.approx(1.0) and p["a"]["recall"] == pytest.approx(2 / 3)
    assert p["b"]["precision"] == pytest.approx(1 / 3) and p["b"]["recall"] == pytest.approx(1.0)
    assert p["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert [r["support"] for r in i.per_class] == [3, 1, 2]
    f1 = [2 * (2 / 3) / (1 + 2 / 3), 2 * (1 / 3) / (1 + 1 / 3), 2 * 0.5 / 1.5]
    assert i.macro_f1 == pytest.approx(np.mean(f1))
    # losses: -log p(true): index 2 -> -log 0.2, index 5 -> -log 0.2 (tie: lower index first), index 1 -> -log 0.6
    assert [t["index"] for t in i.top_losses] == [2, 5, 1]
    assert i.top_losses[0] == {"index": 2, "true": 0, "predicted": 1, "probability": pytest.approx(0.7),
                               "true_probability": pytest.approx(0.2), "loss": pytest.approx(-np.log(0.2))}
    assert i.most_confused == [{"true": 0, "predicted": 1, "count": 1}, {"true": 2, "predicted": 1, "count": 1}]


def test_interpret_agrees_with_sklearn():
    from sklearn.metrics import classification_report, f1_score

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 500)
    proba = rng.random((500, 10))
    proba[np.arange(500), labels] += rng.random(500)  # better than chance
    i = interpret(proba, labels, [str(c) for c in range(10)])
    pred = proba.argmax(1)
    assert i.macro_f1 == pytest.approx(f1_score(labels, pred, average="macro"))
    report = classification_report(labels, pred, output_dict=True)
    for row in i.per_class:
        assert row["precision"] == pytest.approx(report[row["class"]]["precision"])
        assert row["recall"] == pytest.approx(report[row["class"]]["recall"])


def test_interpret_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not fit"):
        interpret(PROBA[:, :2], LABELS, ["a", "b", "c"])


def test_overfitting_verdict():
    falling = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e} for e in range(1, 6)]
    assert overfitting(falling)["overfitting"] is False
    rising = [{"epoch": e, "train_loss": 1 / e, "val_loss": v} for e, v in enumerate([0.5, 0.3, 0.25, 0.3, 0.4], 1)]
    verdict = overfitting(rising)
    assert verdict["overfitting"] is True and verdict["from_epoch"] == 4 and verdict["best_epoch"] == 3
    assert "from epoch 4" in verdict["verdict"]
    assert overfitting([])["overfitting"] is None
    assert "fitted in one step" in overfitting([])["verdict"]  # k-NN: no epochs, not "too few epochs"
    assert "no validation loss" in overfitting([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4}])[
        "verdict"]
    assert "one epoch only" in overfitting([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6}])["verdict"]


@pytest.fixture(scope="module")
def knn_dir(mnist, tmp_path_factory):
    (x, y), _ = mnist
    return models.create("knn").fit(x[:2000], y[:2000]).save(tmp_path_factory.mktemp("m") / "knn")


def test_evaluate_json_has_every_key(knn_dir, capsys):
    assert main(["evaluate", str(knn_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "macro_f1", "confusion_matrix", "per_class", "top_losses", "most_confused",
                "n_incorrect", "images_per_second", "dataset"):
        assert key in out
    assert out["dataset"] == "mnist" and 0.85 < out["accuracy"] < 0.97
    assert np.sum(out["confusion_matrix"]) == 10000
    assert out["n_incorrect"] == round(10000 * (1 - out["accuracy"]))
    saved = json.loads((knn_dir / "metrics.json").read_text())
    assert saved["accuracy"] == out["accuracy"]


@pytest.mark.slow
def test_evaluate_text_and_fashion(knn_dir, capsys):
    assert main(["evaluate", str(knn_dir)]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "confusion matrix" in text and "top losses" in text and "most confused" in text
    # A digit model on Fashion-MNIST: runs, and the class names are the clothes.
    assert main(["evaluate", str(knn_dir), "--dataset", "fashion-mnist", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "fashion-mnist" and out["classes"][0] == "T-shirt/top" and out["accuracy"] < 0.5


def test_evaluate_bad_directory(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "not a model directory" in capsys.readouterr().err


@pytest.mark.slow
def test_report_holds_every_section(knn_dir, mnist, tmp_path, capsys):
    (x, y), _ = mnist
    mlp = models.create("mlp-sklearn-tuned", max_iter=3, hidden=(32,)).fit(x[:1500], y[:1500], x[1500:2000],
                                                                         y[1500:2000])
    mlp_dir = mlp.save(tmp_path / "mlp")
    out = tmp_path / "report.html"
    assert main(["report", str(knn_dir), str(mlp_dir), "--out", str(out)]) == 0
    page = out.read_text()
    for marker in ('id="comparison"', 'class="curves"', 'class="overfitting"', 'class="confusion"',
                   'class="top-losses"', 'class="most-confused"', 'class="per-class"'):
        assert marker in page
    assert page.count("data:image/png;base64,") >= 5  # 2 confusion, 2 top-loss grids, 1 curve figure
    assert "No per-epoch history" in page  # knn has no curves
    assert "src=\"http" not in page and "href=" not in page  # self-contained
    assert not list(tmp_path.glob(".report.html.*"))  # atomic write left no temporary file


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--models", "knn,mlp-sklearn", "--limit", "1000", "--epochs-scale", "0.01",
                 "--out", str(out)]) == 0
    result = json.loads((out / "benchmark.json").read_text())
    assert [r["model"] for r in result["summary"]] == ["knn", "mlp-sklearn"]
    knn, mlp = result["runs"]
    assert result["test_images"] == 10000
    assert (knn["train_images"], knn["val_images"]) == (1000, 0)  # nearest neighbours keep every image
    assert (mlp["train_images"], mlp["val_images"]) == (900, 100)
    assert knn["reference"] == 96.88 and 0.75 < knn["accuracy"] < 0.97 and knn["file_bytes"] >= 1000 * 784
    assert mlp["config"]["max_iter"] == 2
    table = (out / "benchmark.md").read_text()
    assert "| knn | 96.88% |" in table and "images/s" in table
    assert json.loads((out / "knn" / "metrics.json").read_text())["dataset"] == "mnist"

    # Re-running one family replaces its run and keeps the others; another seed adds a run.
    assert main(["benchmark", "--models", "knn", "--limit", "500", "--out", str(out)]) == 0
    assert main(["benchmark", "--models", "knn", "--seeds", "1", "--limit", "500", "--out", str(out)]) == 0
    result = json.loads((out / "benchmark.json").read_text())
    assert [(r["model"], r["seed"], r["train_images"]) for r in result["runs"]] == [
        ("mlp-sklearn", 0, 900), ("knn", 0, 500), ("knn", 1, 500)]
    assert result["summary"][1]["seeds"] == 2


def test_benchmark_unknown_family_fails_clearly(tmp_path, capsys):
    assert main(["benchmark", "--models", "knn,no-such-model", "--out", str(tmp_path / "b")]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # failed before training anything


@pytest.mark.slow
def test_evaluate_bundled_measures_its_card(capsys):
    """`digitlab evaluate bundled`: the shipped model scores exactly what its model card says."""
    from digitlab.reader.infer import bundled

    assert main(["evaluate", "bundled", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(bundled().card["test"]["accuracy"], abs=1e-9)
    assert result["accuracy"] >= 0.9955  # the forms-trained model: 99.59% (BENCHMARKS.md, issue 21)


@pytest.mark.slow
def test_benchmark_fashion_has_no_mnist_references(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--models", "knn", "--dataset", "fashion-mnist", "--limit", "500",
                 "--out", str(out)]) == 0
    result = json.loads((out / "benchmark.json").read_text())
    assert result["dataset"] == "fashion-mnist" and result["summary"][0]["reference"] is None
    assert 0.5 < result["summary"][0]["accuracy"] < 0.9  # far above chance (0.1), far below MNIST
    assert "| knn | - |" in (out / "benchmark.md").read_text()


def test_votes_that_miss_the_true_label_read_as_infinite_loss_not_a_clipped_number():
    from digitlab.lab.evaluate import summary_text

    # k-NN style: vote shares of 5 neighbours; three mistakes with no vote for the true label
    proba = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0.6, 0.4], [0, 0, 1.0], [0.8, 0.2, 0]])
    labels = np.array([0, 2, 0, 1, 0])
    i = interpret(proba, labels, ["a", "b", "c"], top_k=2)
    assert i.no_true_vote == 3 and [t["index"] for t in i.top_losses] == [1, 3]  # the surest of them
    text = summary_text(i)
    assert "69.08" not in text and "inf" in text and "3 mistakes gave the true label no probability" in text
