"""ONNX export (fp32 parity, int8 accuracy), torch-free inference and the bundled model."""

import json
import subprocess
import sys

import numpy as np
import pytest

from digitlab import card
from digitlab.cli import main
from digitlab.errors import ImageError, ModelError
from digitlab.reader.infer import BUNDLED, OnnxModel, bundled


@pytest.fixture(scope="module")
def tiny_model_dir(mnist, tmp_path_factory):
    """A `fast` model trained for two epochs on 5,000 images (about 95% accurate), saved."""
    from digitlab.lab.models import create

    (x, y), _ = mnist
    model = create("fast", seed=0, epochs=2, batch_size=64)
    model.fit(x[:5000], y[:5000])
    return model.save(tmp_path_factory.mktemp("tiny") / "fast")


@pytest.mark.slow
def test_fp32_export_matches_pytorch(tiny_model_dir, mnist, tmp_path):
    from digitlab.lab.export import export
    from digitlab.lab.models import load

    _, (x_test, _) = mnist
    path = export(tiny_model_dir, out=tmp_path / "m.onnx")
    torch_proba = load(tiny_model_dir).predict_proba(x_test[:1000])
    onnx = OnnxModel(path)
    assert np.abs(onnx.predict_proba(x_test[:1000]) - torch_proba).max() <= 1e-4
    assert np.abs(onnx.predict_proba(x_test[7]) - torch_proba[7]).max() <= 1e-4  # single-image path
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["family"] == "fast" and card["normalization"] == {"mean": 0.1307, "std": 0.3081}
    assert 0.9 < card["test"]["accuracy"] <= 1 and (tmp_path / "m.md").read_text().startswith("# digitlab")


@pytest.mark.slow
def test_export_cli_int8(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["export", str(tiny_model_dir), "--quantize", "int8", "--out", str(out)]) == 0
    assert "int8" in capsys.readouterr().out
    card = OnnxModel(out).card
    assert "int8" in card["format"] and card["test"]["accuracy"] > 0.9
    assert out.stat().st_size < (tiny_model_dir / "weights.safetensors").stat().st_size


def test_a_distilled_models_card_rebuilds_its_teachers_first(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITLAB_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)  # the run records its teachers' paths as given
    assert main(["train", "mlp", "--limit", "300", "--epochs", "1", "--out", "teacher"]) == 0
    assert main(["train", "mlp", "--limit", "300", "--epochs", "1", "--out", "student", "--seed", "1",
                 "--set", "teachers=teacher"]) == 0
    assert main(["export", "student", "--out", "student.onnx"]) == 0
    teacher, student = OnnxModel("student.onnx").card["command"].split(" && ")[:2]
    assert teacher.startswith("digitlab train mlp") and "--out teacher" in teacher
    assert "--out student" in student and "teachers=teacher" in student


def test_export_rejects_non_model(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 1
    assert "not a model directory" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_bundled_loses_at_most_a_tenth_of_a_point(mnist, tmp_path):
    from digitlab.lab.export import quantize_int8
    from digitlab.lab.loop import normalize

    (x, _), (x_test, y_test) = mnist
    calibration = normalize(x[np.random.default_rng(0).choice(len(x), 1000, replace=False)], 0.1307, 0.3081)
    quantized = quantize_int8(BUNDLED.read_bytes(), calibration)
    card.write(tmp_path / "int8.onnx", quantized, bundled().card)
    fp32 = bundled().score(x_test, y_test)["accuracy"]
    int8 = OnnxModel(tmp_path / "int8.onnx").score(x_test, y_test)["accuracy"]
    assert int8 >= fp32 - 0.001, (fp32, int8)
    # What makes that hold on every CPU, not just this one: 7-bit weights. Without VNNI, onnxruntime
    # adds pairs of uint8 x int8 products in int16 (VPMADDUBSW); 2 x 255 x 64 = 32,640 cannot saturate.
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load_from_string(quantized).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 5 and all(-64 <= w.min() and w.max() <= 64 for w in weights)


@pytest.mark.slow
def test_bundled_model_scores_its_card(mnist):
    _, (x_test, y_test) = mnist
    model = bundled()
    assert model is bundled()  # cached
    assert BUNDLED.stat().st_size <= 5_000_000
    for field in ("architecture", "n_parameters", "seed", "command", "training_data", "normalization"):
        assert field in model.card
    result = model.score(x_test, y_test)
    assert result["n"] == 10000 and result["accuracy"] >= model.card["test"]["accuracy"] >= 0.99
    proba = model.predict_proba(x_test[:5])
    assert proba.dtype == np.float32 and proba.shape == (5, 10)
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (model.predict(x_test[:100]) == y_test[:100]).mean() >= 0.98


def test_temperature_flattens_probabilities(mnist):
    _, (x_test, _) = mnist
    sharp, flat = bundled().predict_proba(x_test[:20]), bundled().predict_proba(x_test[:20], temperature=3.0)
    assert (flat.max(1) < sharp.max(1)).all()
    assert (flat.argmax(1) == sharp.argmax(1)).all()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="uint8"):
        bundled().predict_proba(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ImageError, match=r"\[N, 28, 28\]"):
        bundled().predict_proba(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    (tmp_path / "junk.json").write_text(json.dumps(bundled().card))
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")


def test_inference_never_imports_torch():
    code = ("import sys, numpy as np, digitlab.reader.infer as di; "
            "p = di.bundled().predict_proba(np.zeros((1, 28, 28), np.uint8)); "
            "assert p.shape == (1, 10); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
