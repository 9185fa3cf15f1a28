"""`digitlab export --bundle` never replaces the shipped model with a less accurate one (unless --force).
Both tests point the shipped model at a copy in a temporary folder: the real one is never touched."""

import hashlib
import shutil

import pytest

from digitlab import card as model_card
from digitlab.cli import main
from digitlab.lab import export as lab_export  # the commands import it when they run: patch it there
from digitlab.reader import infer


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    folder = tmp_path / "assets"
    folder.mkdir()
    for suffix in (".onnx", ".json", ".md"):
        shutil.copy(infer.BUNDLED.with_suffix(suffix), folder / infer.BUNDLED.with_suffix(suffix).name)
    monkeypatch.setattr(infer, "BUNDLED", folder / infer.BUNDLED.name)
    return infer.BUNDLED


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_export(accuracy: float):
    """Stands in for the training stack's export: the shipped bytes under a card with `accuracy`."""

    def export(model_dir, out, quantize=None, bundle=False):
        card = model_card.read(infer.BUNDLED)
        model_card.write(out, infer.BUNDLED.read_bytes(), {**card, "test": {**card["test"], "accuracy": accuracy}})
        return out

    return export


@pytest.mark.hostile("cli-export-worse-bundle")
def test_worse_model_is_refused_and_force_overrides(shipped, monkeypatch, tmp_path, capsys):
    before = {s: digest(shipped.with_suffix(s)) for s in (".onnx", ".json", ".md")}
    monkeypatch.setattr(lab_export, "export", fake_export(0.098))
    assert main(["export", str(tmp_path / "run"), "--bundle"]) == 1
    err = capsys.readouterr().err
    assert "9.80% is below the shipped model's 99.59%" in err and "--force" in err
    assert {s: digest(shipped.with_suffix(s)) for s in before} == before
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["digit-model.json", "digit-model.md",
                                                                "digit-model.onnx"]  # staging removed

    assert main(["export", str(tmp_path / "run"), "--bundle", "--force"]) == 0
    assert model_card.read(shipped)["test"]["accuracy"] == 0.098


def test_better_or_equal_model_replaces_the_shipped_one(shipped, monkeypatch, tmp_path, capsys):
    shipped_accuracy = model_card.read(shipped)["test"]["accuracy"]
    monkeypatch.setattr(lab_export, "export", fake_export(shipped_accuracy))  # as good: replaced
    assert main(["export", str(tmp_path / "run"), "--bundle"]) == 0
    monkeypatch.setattr(lab_export, "export", fake_export(0.9990))  # better: replaced
    assert main(["export", str(tmp_path / "run"), "--bundle"]) == 0
    assert model_card.read(shipped)["test"]["accuracy"] == 0.9990
    assert "0.9990" in shipped.with_suffix(".md").read_text()


@pytest.mark.slow
@pytest.mark.hostile("cli-export-worse-bundle")
def test_real_worse_model_is_refused(shipped, mnist, tmp_path, capsys):
    """A `fast` model trained for one epoch on 2,000 images really exported, and refused."""
    from digitlab.lab.models import create

    (x, y), _ = mnist
    run = create("fast", seed=0, epochs=1, batch_size=64).fit(x[:2000], y[:2000]).save(tmp_path / "run")
    before = digest(shipped)
    assert main(["export", str(run), "--bundle"]) == 1
    assert "is below the shipped model's" in capsys.readouterr().err and digest(shipped) == before
