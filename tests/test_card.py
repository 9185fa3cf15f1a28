"""The model card: one card, inside the ONNX file and beside it, identical; validated and checksummed on load."""

import json

import pytest

from digitlab import card
from digitlab.cli import main
from digitlab.errors import ModelError
from digitlab.reader.infer import BUNDLED, OnnxModel, bundled


@pytest.fixture
def model_copy(tmp_path):
    """The bundled model written anew through the card module, in a temporary folder."""
    path = tmp_path / "m.onnx"
    card.write(path, BUNDLED.read_bytes(), bundled().card)
    return path


def test_bundled_card_inside_and_beside_are_identical_and_hash_matches():
    data = BUNDLED.read_bytes()
    inside = card.read_bytes(data, BUNDLED)
    assert BUNDLED.with_suffix(".json").read_text() == card.dumps(inside)
    assert card.file_sha256(data) == inside["sha256"]
    assert bundled().temperature == inside["temperature"] != 1.0
    assert "held-out validation" in inside["calibration"] and "test split only measures" in inside["calibration"]
    for field in ("dataset", "split", "normalization", "command", "input", "output"):
        assert field in inside
    assert inside["command"].startswith("digitlab train best ") and "digitlab export" in inside["command"]
    assert "scripts/" not in inside["command"]
    assert f"`{inside['sha256']}`" in BUNDLED.with_suffix(".md").read_text()


def test_rewriting_a_card_keeps_the_network_bytes(model_copy):
    import onnx  # the lab's dependency, used here only to look at the graph independently

    assert (onnx.load(str(model_copy)).graph.SerializeToString()
            == onnx.load(str(BUNDLED)).graph.SerializeToString())
    assert len([p for p in onnx.load(str(model_copy)).metadata_props if p.key == card.CARD_KEY]) == 1


def test_update_changes_the_card_everywhere(model_copy):
    new = card.update(model_copy, temperature=2.0, calibration="test")
    assert card.read(model_copy) == new and new["temperature"] == 2.0
    assert json.loads(model_copy.with_suffix(".json").read_text())["temperature"] == 2.0
    assert OnnxModel(model_copy).temperature == 2.0
    assert "Temperature: 2.0 (test)" in model_copy.with_suffix(".md").read_text()


@pytest.mark.parametrize("damage, words", [
    ("flip a weight byte", "checksum mismatch"),
    ("truncate", "not a loadable ONNX model"),
    ("edit the temperature inside", "checksum mismatch"),
    ("edit the card beside", "differs from the one inside"),
    ("not onnx", "not a loadable ONNX model"),
    ("no card", "no digitlab model card"),
])
def test_damaged_files_are_a_model_error_naming_the_file(model_copy, damage, words, capsys):
    data = bytearray(model_copy.read_bytes())
    sidecar = model_copy.with_suffix(".json")
    temperature = f'"temperature": {json.dumps(json.loads(sidecar.read_text())["temperature"])}'.encode()
    if damage == "flip a weight byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "edit the temperature inside":
        assert temperature in data
        data = data.replace(temperature, b'"temperature": 0.9475')
        sidecar.unlink()
    elif damage == "edit the card beside":
        sidecar.write_text(sidecar.read_text().replace(temperature.decode(), '"temperature": 0.9475'))
    elif damage == "not onnx":
        data = bytearray(b"GIF89a this is not a model at all" * 10)
    elif damage == "no card":
        import onnx

        proto = onnx.load(str(model_copy))
        del proto.metadata_props[:]
        data = bytearray(proto.SerializeToString())
        sidecar.unlink()
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=words) as info:
        OnnxModel(model_copy)
    assert str(model_copy) in str(info.value)
    # and the CLI says it in one line, never an onnxruntime traceback
    assert main(["predict", str(BUNDLED.with_suffix(".md")), "--model", str(model_copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "InvalidProtobuf" not in err


def test_validate_rejects_missing_fields_and_wrong_shapes():
    good = bundled().card
    card.validate(good)
    with pytest.raises(ModelError, match="lacks 'normalization'"):
        card.validate({k: v for k, v in good.items() if k != "normalization"})
    with pytest.raises(ModelError, match="input"):
        card.validate({**good, "input": {**good["input"], "shape": ["batch", 3, 32, 32]}})
    with pytest.raises(ModelError, match="temperature"):
        card.validate({**good, "temperature": -1.0})


def test_a_model_trained_through_another_reader_pipeline_warns_on_loading(model_copy):
    """The card records which reader pipeline made the images the model trained on; another version
    reads, but says why it may read less well."""
    import warnings

    from digitlab.reader.pipeline import PIPELINE_VERSION

    card.update(model_copy, pipeline_version=PIPELINE_VERSION)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxModel(model_copy)  # the same version: silent
    card.update(model_copy, pipeline_version=PIPELINE_VERSION - 1)
    with pytest.warns(UserWarning, match=f"pipeline v{PIPELINE_VERSION - 1}.*this reader is v{PIPELINE_VERSION}"):
        OnnxModel(model_copy)
    assert f"pipeline v{PIPELINE_VERSION - 1}" in card.markdown(card.read(model_copy))
