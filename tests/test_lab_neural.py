"""The neural half of the lab: mlp, cnn, resnet34, checkpoints and resume, LR finder, train/lr-find CLI."""

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from digitlab.cli import main
from digitlab.lab import models
from digitlab.lab.callbacks import Callback, Checkpoint
from digitlab.lab.checkpoint import save_checkpoint
from digitlab.lab.experiment import make_model


@pytest.fixture(scope="module")
def small(mnist):
    """5,000 training images and 2,000 held-out test images."""
    (x, y), (xt, yt) = mnist
    return (x[:5000], y[:5000]), (xt[:2000], yt[:2000])


def test_families_registered():
    assert {"mlp", "cnn", "resnet34"} <= set(models.FAMILIES)


@pytest.mark.slow
def test_cnn_one_epoch_on_5000_images_is_far_above_chance(small):
    (x, y), (xt, yt) = small
    model = make_model("cnn", seed=0, epochs=1, batch_size=64).fit(x, y)
    assert model.score(xt, yt) > 0.90
    assert len(model.history) == 1 and model.history[0]["train_loss"] < 1.0


@pytest.mark.slow
def test_mlp_learns_and_dropout_is_configurable(small):
    (x, y), (xt, yt) = small
    model = make_model("mlp", seed=0, epochs=4).fit(x[:4000], y[:4000], x[4000:], y[4000:])
    assert model.score(xt, yt) > 0.88
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4] and "val_loss" in model.history[-1]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0 for m in make_model("mlp", dropout=0).net) == 2


@pytest.mark.slow
def test_resnet34_shape_and_a_few_steps_reduce_loss(small):
    (x, y), _ = small
    model = make_model("resnet34", seed=0)
    net = model.net
    # ResNet-34: 16 BasicBlocks in stages of 3, 4, 6, 3; 21.3M parameters with a 10-way head.
    assert sum(type(m).__name__ == "BasicBlock" for m in net.modules()) == 16
    assert model.n_parameters() == 21_283_530
    from digitlab.lab.loop import to_tensor

    xb, yb = to_tensor(x[:64]), torch.from_numpy(y[:64])
    assert net(xb).shape == (64, 10)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.train()
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_save_load_round_trip_gives_identical_predictions(small, tmp_path):
    (x, y), (xt, _) = small
    model = make_model("cnn", seed=1, epochs=1).fit(x[:2000], y[:2000])
    model.save(tmp_path / "m")
    back = models.load(tmp_path / "m")
    assert type(back) is type(model) and back.config == model.config and back.history == model.history
    np.testing.assert_array_equal(back.predict_proba(xt[:500]), model.predict_proba(xt[:500]))


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, learner):
        if learner.epoch + 1 == self.epochs:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_continues_exactly_where_the_checkpoint_left_off(small, tmp_path):
    (x, y), _ = small
    x, y, xv, yv = x[:1500], y[:1500], x[1500:2000], y[1500:2000]
    settings = dict(seed=3, epochs=3, augment=0.5)  # dropout and augmentation: both must be reproduced

    straight = make_model("mlp", **settings).fit(x, y, xv, yv)

    interrupted = make_model("mlp", **settings)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, xv, yv, callbacks=[Checkpoint(lambda learner: save_checkpoint(learner, tmp_path)),
                                                 StopAfter(2)])
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["optimizer-2.safetensors",
                                                                      "rng-2.safetensors", "weights-2.safetensors"]
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["scheduler_state"]["last_epoch"] == 2 * 12  # 1,500 images in batches of 128: 12 a epoch

    resumed = make_model("mlp", **settings)
    resumed.resume(tmp_path)
    assert resumed.learner.start_epoch == 2 and len(resumed.history) == 2
    resumed.fit(x, y, xv, yv)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_lr_zero_runs_the_lr_finder_first(small):
    (x, y), (xt, yt) = small
    model = make_model("mlp", seed=0, epochs=1, lr=0).fit(x[:3000], y[:3000])
    assert 1e-5 < model.config.lr < 1.0 and "lr_found" not in dataclasses.asdict(model.config)
    assert np.isfinite(model.lr_finder_["losses"]).all() and len(model.lr_finder_["lrs"]) > 20
    # The peak of the one-cycle schedule: a third of the LR where the smoothed loss was lowest.
    finder = model.lr_finder_
    assert finder["min_loss_lr"] == finder["lrs"][int(np.argmin(finder["losses"]))]
    assert model.config.lr == pytest.approx(finder["min_loss_lr"] / 3)
    assert model.score(xt, yt) > 0.7  # 24 steps at the suggested LR; chance is 0.1


@pytest.mark.slow
def test_cli_train_writes_model_metrics_and_resumes(tmp_path, capsys):
    out = tmp_path / "mlp"
    assert main(["train", "mlp", "--limit", "1000", "--epochs", "2", "--seed", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "val accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1 and metrics["train_time_s"] > 0 and metrics["train_images"] == 900
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "mlp" and config["dataset"] == "mnist" and config["seed"] == 4
    assert len(json.loads((out / "history.json").read_text())) == 2
    # Resuming a finished run re-evaluates the same weights.
    assert main(["train", "mlp", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


def test_cli_train_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "no-such-model", "--out", str(tmp_path / "a")]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["train", "mlp", "--resume", "--out", str(tmp_path / "b")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "resnet34", "--dropout", "0.1", "--out", str(tmp_path / "c")]) == 1
    assert "resnet34 has no setting dropout" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_fashion_mnist(tmp_path):
    from digitlab.data import locate

    if locate("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    out = tmp_path / "f"
    assert main(["train", "mlp", "--dataset", "fashion-mnist", "--limit", "1000", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dataset"] == "fashion-mnist"
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.5


@pytest.mark.slow
def test_cli_lr_find_saves_plot_and_prints_suggestion(tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", "mlp", "--out", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = capsys.readouterr().out
    suggestion = float(line.split("suggested learning rate: ")[1].split()[0])
    assert 1e-6 < suggestion < 1.0


@dataclass
class CentroidConfig:
    seed: int = 0


class NearestCentroid(models.Classifier):
    """A one-shot classical model, to show that `digitlab train` drives any Classifier."""

    family = "centroid"
    Config = CentroidConfig

    def fit(self, x, y, x_val=None, y_val=None):
        flat = x.reshape(len(x), -1) / 255.0
        self.centroids = np.stack([flat[y == c].mean(0) for c in range(10)])
        return self

    def predict_proba(self, x):
        d = ((x.reshape(len(x), 1, -1) / 255.0 - self.centroids) ** 2).sum(-1)
        p = np.exp(-(d - d.min(1, keepdims=True)))
        return (p / p.sum(1, keepdims=True)).astype(np.float32)

    def save_weights(self, directory):
        np.savez(directory / "weights.npz", centroids=self.centroids)

    def load_weights(self, directory):
        self.centroids = np.load(directory / "weights.npz", allow_pickle=False)["centroids"]


def test_cli_train_drives_a_classical_family(tmp_path, monkeypatch, capsys):
    real = models.family_class
    monkeypatch.setattr(models, "family_class", lambda name: NearestCentroid if name == "centroid" else real(name))
    out = tmp_path / "c"
    assert main(["train", "centroid", "--limit", "3000", "--seed", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.75 < metrics["test_accuracy"] < 0.9  # nearest centroid: about 82% on MNIST
    assert metrics["epochs"] == 1 and json.loads((out / "config.json").read_text())["config"] == {"seed": 2}
    assert main(["train", "centroid", "--epochs", "3", "--out", str(out)]) == 1
    assert "centroid has no setting epochs" in capsys.readouterr().err
    assert main(["train", "centroid", "--resume", "--out", str(out)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_no_holdout_set_and_threads(tmp_path, capsys):
    """The options the old scripts had: a final model on every image, any setting, threads, device."""
    out = tmp_path / "m"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "mlp", "--limit", "600", "--no-holdout", "--set", "hidden=64", "--set", "epochs=1",
                     "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
        assert torch.get_num_threads() == 1  # the caller (here the CLI) chose it
    finally:
        torch.set_num_threads(threads)
    assert "val accuracy" not in capsys.readouterr().out  # nothing held out
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["hidden"] == 64 and config["split"] == {"train_images": 600, "val_images": 0,
                                                                     "limit": 600}
    assert config["command"].startswith("digitlab train mlp --limit 600 --no-holdout")
    assert config["normalization"] == {"mean": 0.1307, "std": 0.3081}
    assert "threads" not in config["config"] and "device" not in config["config"]  # run-time, not settings
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 600 and metrics["val_images"] == 0 and metrics["val_accuracy"] is None


def test_cli_train_rejects_bad_settings(tmp_path, capsys):
    assert main(["train", "mlp", "--set", "no_such=1", "--out", str(tmp_path / "a")]) == 1
    assert "mlp has no setting no_such" in capsys.readouterr().err
    assert main(["train", "mlp", "--set", "epochs", "--out", str(tmp_path / "b")]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "knn", "--device", "cuda", "--out", str(tmp_path / "c")]) == 1
    assert "knn runs on the CPU only" in capsys.readouterr().err


def test_bundled_card_names_a_digitlab_command_that_parses():
    from digitlab.cli import build_parser
    from digitlab.reader.infer import bundled

    commands = [c.strip() for c in bundled().card["command"].split("&&")]
    train, export = commands[0].split(), commands[1].split()
    assert train[:3] == ["digitlab", "train", "best"] and export[:2] == ["digitlab", "export"]
    for argv in (train, export):
        args = build_parser().parse_args(argv[1:])
        assert callable(args.func)
    assert not build_parser().parse_args(train[1:]).no_holdout  # the temperature is fitted on the hold-out


def test_training_leaves_the_callers_random_state_alone(small):
    (x, y), _ = small
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_model("mlp", seed=0, epochs=1, hidden=16).fit(x[:300], y[:300])
    assert torch.equal(torch.rand(3), expected)
