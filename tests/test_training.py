"""The training loop's behaviour on every CPU: precision, tiny runs, resume and extend, crash safety,
progress, benchmark failures."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from digitlab import progress
from digitlab.cli import main
from digitlab.errors import DigitlabError
from digitlab.lab import models
from digitlab.lab.callbacks import Callback, Checkpoint
from digitlab.lab.checkpoint import save_checkpoint
from digitlab.lab.experiment import make_model
from digitlab.lab.loop import to_tensor
from digitlab.lab.lr_finder import lr_find
from digitlab.lab.precision import resolve_precision

SRC = Path(__file__).resolve().parents[1] / "src"


def python(code: str, **env: str) -> str:
    """Runs `code` in a fresh interpreter (this worktree's digitlab first) and returns its stdout."""
    environ = {**os.environ, "PYTHONPATH": str(SRC), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=environ).stdout.strip()


# ---------------------------------------------------------------------------- precision
def test_auto_precision_is_fp32_where_bf16_would_be_emulated():
    code = "from digitlab.lab.precision import resolve_precision; print(resolve_precision('auto'))"
    # ATen limited to AVX2, as on an AVX2-only EPYC: bf16 would be emulated.
    assert python(code, ATEN_CPU_CAPABILITY="avx2") == "fp32"


def test_auto_precision_follows_the_cpu_flags():
    from digitlab.machine import cpu_flags

    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    if os.environ.get("ATEN_CPU_CAPABILITY") or os.environ.get("ONEDNN_MAX_CPU_ISA"):
        native = False
    assert resolve_precision("auto") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(DigitlabError, match="unknown precision 'fp16'"):
        resolve_precision("fp16")


def test_the_saved_config_records_the_precision_used(tmp_path, mnist):
    (x, y), _ = mnist
    model = make_model("fast", epochs=1, precision="auto").fit(x[:300], y[:300])
    assert model.config.precision == resolve_precision("auto")
    model.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["precision"] in ("fp32", "bf16")
    out = tmp_path / "cli"
    assert main(["train", "mlp", "--limit", "300", "--epochs", "1", "--precision", "fp32", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["precision"] == "fp32"


def test_bundled_training_config_still_loads():
    """The bundled model's card holds a config from before --precision (bf16: true): it must load."""
    from digitlab.reader.infer import bundled

    config = bundled().card["config"]
    cls = models.family_class(bundled().card["family"])
    fields = {f for f in cls.Config.__dataclass_fields__}
    model = cls(cls.Config(**{k: v for k, v in config.items() if k in fields}))
    assert model.n_parameters() == bundled().card["n_parameters"]


def outlier_loss(logits: torch.Tensor, y: torch.Tensor, config) -> torch.Tensor:
    """The loss a Learner computes once the OutlierExposure callback has begun its run."""
    from digitlab.lab.callbacks import OutlierExposure

    learner = SimpleNamespace(config=config, loss_func=None)
    OutlierExposure().on_train_begin(learner)
    return learner.loss_func(logits, y)


def test_images_that_are_not_one_digit_are_pulled_towards_equal_probabilities():
    from digitlab.lab.callbacks import NOT_ONE_DIGIT, OUTLIER_WEIGHT, training_callbacks
    from digitlab.lab.loop import TrainConfig

    cfg = TrainConfig(not_one_digit=0.2)
    assert [type(c).__name__ for c in training_callbacks(cfg)] == ["OutlierExposure"]
    other = torch.tensor([NOT_ONE_DIGIT])
    flat, sure = torch.zeros(1, 10), torch.tensor([[8.0] + [0.0] * 9])
    assert outlier_loss(flat, other, cfg).item() == pytest.approx(OUTLIER_WEIGHT * np.log(10))
    assert outlier_loss(sure, other, cfg) > outlier_loss(flat, other, cfg)
    digits, logits = torch.tensor([3, 1]), torch.randn(2, 10)  # digits alone: plain cross-entropy
    assert outlier_loss(logits, digits, cfg).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, digits).item(), rel=1e-6)


def test_a_run_with_not_one_digit_images_reads_them_less_surely(mnist):
    """Trained beside pieces and pairs of digits, a model is less sure of unseen ones than the same
    model trained without them, and its running accuracy counts the digits alone."""
    from digitlab.lab.augment import not_one_digit

    (x, y), (x_test, y_test) = mnist
    others = not_one_digit(x_test[:500], y_test[:500], 200, seed=1, workers=1)[0]
    sureness = {}
    for share in (0.0, 0.3):
        model = make_model("mlp", epochs=3, not_one_digit=share, seed=0, precision="fp32").fit(x[:2000], y[:2000])
        assert model.config.not_one_digit == share and 0.8 < model.history[-1]["train_acc"] <= 1
        assert model.score(x_test[:500], y_test[:500]) > 0.8
        sureness[share] = model.predict_proba(others).max(1).mean()
    assert sureness[0.3] < sureness[0.0] - 0.1  # measured 0.42 against 0.65


def test_distillation_matches_the_teachers_softened_probabilities():
    from digitlab.lab.callbacks import DISTILL_TEMPERATURE, DISTILL_WEIGHT, Distillation
    from digitlab.lab.loop import TrainConfig

    class Says(torch.nn.Module):  # a teacher whose logits are fixed, whatever the image
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits

    y = torch.tensor([3, 1])
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    hard = torch.nn.functional.cross_entropy(logits, y)

    def distilled(teacher_logits: torch.Tensor) -> float:
        learner = SimpleNamespace(config=TrainConfig(precision="fp32"), xb=torch.zeros(2, 1, 28, 28),
                                  logits=logits, loss=hard)
        Distillation([Says(teacher_logits)]).after_loss(learner)
        return learner.loss.item()

    assert distilled(logits) == pytest.approx((1 - DISTILL_WEIGHT) * hard.item(), rel=1e-5)  # agreeing teacher
    assert distilled(-logits) > distilled(logits) + 0.1
    assert DISTILL_TEMPERATURE > 1  # softened: the teacher's doubts carry weight


def test_a_student_learns_what_its_teacher_knows_beyond_the_labels(tmp_path, mnist):
    """On a few hundred images, a student taught by a model trained on more agrees with it more often
    than the same student trained on the labels alone; the run records its teachers."""
    (x, y), (x_test, y_test) = mnist
    make_model("mlp", epochs=3, seed=1, precision="fp32").fit(x[:3000], y[:3000]).save(tmp_path / "teacher")
    teacher = models.load(tmp_path / "teacher").predict(x_test[:1000])
    agreement = {}
    for teachers in ("", str(tmp_path / "teacher")):
        student = make_model("mlp", epochs=10, seed=0, precision="fp32", teachers=teachers).fit(x[:300], y[:300])
        assert student.config.teachers == teachers
        agreement[teachers] = (student.predict(x_test[:1000]) == teacher).mean()
    assert agreement[str(tmp_path / "teacher")] > agreement[""] + 0.03, agreement  # measured 0.81 against 0.75


def test_a_teacher_must_be_a_neural_network(tmp_path, mnist):
    (x, y), _ = mnist
    make_model("knn", k=1).fit(x[:100], y[:100]).save(tmp_path / "knn")
    with pytest.raises(DigitlabError, match="a teacher must be a neural model"):
        make_model("mlp", epochs=1, teachers=str(tmp_path / "knn")).fit(x[:100], y[:100])


# ---------------------------------------------------------------------------- small runs
@pytest.mark.parametrize("limit", ["500", "150"])  # 4 batches of 128; 1 batch (a one-step schedule)
def test_tiny_one_epoch_runs_train(tmp_path, limit):
    out = tmp_path / "m"
    assert main(["train", "mlp", "--limit", limit, "--epochs", "1", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_knn_fast_trains_on_small_limits(tmp_path):
    out = tmp_path / "k"
    assert main(["train", "knn-fast", "--limit", "1000", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.85


# ---------------------------------------------------------------------------- resume and extend
def test_resume_with_more_epochs_extends_the_run(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "mlp", "--limit", "1000", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "mlp", "--out", str(out), "--resume", "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "training on to epoch 3 (planned: 1)" in err and "one-cycle schedule of their own" in err
    assert "epoch 2/3" in err and "epoch 3/3" in err  # a resumed run prints its epochs
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 3
    checkpoint = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert checkpoint["epoch"] == 3 and checkpoint["schedule_start"] == 1
    # Fewer epochs than are done: one clear line.
    assert main(["train", "mlp", "--out", str(out), "--resume", "--epochs", "2"]) == 1
    assert "has 3 epochs done; --epochs 2 is fewer" in capsys.readouterr().err
    # Other settings cannot change mid-run: said, not silently dropped.
    assert main(["train", "mlp", "--out", str(out), "--resume", "--lr", "0.1"]) == 0
    assert "ignoring lr=0.1" in capsys.readouterr().err


def test_a_bf16_run_resumed_where_bf16_would_be_emulated_goes_on_in_fp32(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m"
    assert main(["train", "mlp", "--limit", "500", "--epochs", "1", "--out", str(out), "--set", "precision=bf16"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("digitlab.lab.models.neural.native_bf16", lambda device="cpu": False)  # an AVX2-only CPU
    assert main(["train", "mlp", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "trained in bf16, which this CPU would emulate; resuming in fp32" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["config"]["precision"] == "fp32"


class StopAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, learner) -> None:
        if learner.epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_an_extended_run_resumes_exactly(tmp_path, mnist):
    """The extension's own schedule is in the checkpoint: an extended run stopped and resumed
    ends with the same weights as one that went straight through."""
    (x, y), _ = mnist
    x, y = x[:1000], y[:1000]

    def extended(directory: Path, stop_at: int | None = None):
        save = Checkpoint(lambda learner: save_checkpoint(learner, directory))
        make_model("mlp", seed=1, epochs=1).fit(x, y, callbacks=[save])
        model = make_model("mlp", seed=1)
        model.resume(directory)
        assert "one-cycle schedule of their own" in model.extend(3)
        if stop_at:
            with pytest.raises(KeyboardInterrupt):
                model.fit(x, y, callbacks=[save, StopAt(stop_at)])
        else:
            model.fit(x, y, callbacks=[save])
        return model

    straight = extended(tmp_path / "a")
    extended(tmp_path / "b", stop_at=2)
    resumed = make_model("mlp", seed=1)
    resumed.resume(tmp_path / "b")  # the checkpoint's plan: 3 epochs, the schedule restarted at epoch 1
    assert resumed.config.epochs == 3 and resumed.learner.schedule_start == 1
    resumed.fit(x, y)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in straight.history]
    for (name, a), b in zip(straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------- crash safety
def _train(out: Path, *extra: str) -> subprocess.Popen:
    code = "import sys; from digitlab.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["train", "mlp", "--limit", "8000", "--epochs", "3", "--seed", "5", "--out", str(out), *extra]
    # One thread each: the runs go side by side without fighting over cores, and alike.
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "straight")
    killed = _train(tmp_path / "killed")
    checkpoint = tmp_path / "killed" / "checkpoint" / "checkpoint.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():  # the first epoch's checkpoint: epoch 2 has just begun
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads(checkpoint.read_text())["epoch"] == 1  # killed inside epoch 2, before its checkpoint
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = _train(tmp_path / "killed", "--resume")
    errors = [run.communicate(timeout=600)[1].decode() for run in (resumed, straight)]
    assert resumed.returncode == 0 and straight.returncode == 0, errors
    assert "resuming at epoch 2 of 3" in errors[0] and "epoch 3/3" in errors[0]
    a = load_file(tmp_path / "straight" / "weights.safetensors")
    b = load_file(tmp_path / "killed" / "weights.safetensors")
    for name in a:  # same seed, same CPU: bit for bit
        assert torch.equal(a[name], b[name]), name
    history_a = json.loads((tmp_path / "straight" / "history.json").read_text())
    history_b = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [(h["train_loss"], h["val_loss"]) for h in history_a] == [(h["train_loss"], h["val_loss"])
                                                                     for h in history_b]


# ---------------------------------------------------------------------------- progress
def test_lr_finder_shows_progress(mnist, capsys, monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    (x, y), _ = mnist
    model = make_model("mlp")
    lr_find(model.net, to_tensor(x[:2000]), torch.from_numpy(y[:2000].astype(np.int64)), model.config, steps=30)
    err = capsys.readouterr().err
    assert "LR finder: " in err and "/30" in err


def test_progress_is_quiet_for_quick_work_and_ends_its_line():
    import io

    stream = io.StringIO()
    bar = progress.Progress("quick", total=10, stream=stream, delay=5.0)
    for i in range(10):
        bar.update(i + 1)
    bar.close()
    assert stream.getvalue() == ""
    bar = progress.Progress("slow", total=4, stream=stream, delay=0.0)
    bar.update(2, "half")
    bar.close("done", done=4)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("slow: 2/4  50% half") and lines[-1].startswith("slow: 4/4 100% done")


# ---------------------------------------------------------------------------- benchmark
@dataclass
class BrokenConfig:
    seed: int = 0


class Broken(models.Classifier):
    family = "broken"
    Config = BrokenConfig

    def fit(self, x, y, x_val=None, y_val=None):
        raise RuntimeError("out of memory (simulated)")


def test_benchmark_keeps_finished_rows_when_a_model_fails(tmp_path, monkeypatch, capsys):
    real = models.family_class
    monkeypatch.setattr(models, "family_class", lambda name: Broken if name == "broken" else real(name))
    out = tmp_path / "bench"
    assert main(["benchmark", "--models", "knn-fast,broken", "--limit", "2000", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "broken (seed 0) failed: RuntimeError: out of memory (simulated)" in captured.err
    result = json.loads((out / "benchmark.json").read_text())
    assert [r["model"] for r in result["runs"]] == ["knn-fast"] and result["runs"][0]["accuracy"] > 0.9
    assert result["failures"] == [{"model": "broken", "seed": 0, "error": "RuntimeError: out of memory (simulated)"}]
    assert "FAILED: broken" in (out / "benchmark.md").read_text() and "knn-fast" in captured.out
