"""The model card: one per model, built, written, read and validated here (torch-free, numpy-free).

A card is one JSON object. It is written once and lives in two places with the same bytes: inside
the ONNX file (`metadata_props`, key "digitlab_card") and beside it (`MODEL.json`); `MODEL.md` is
its rendering for people. Reading a model checks that the two agree, that the card has every field
the reader needs, that the network's input and output are what the card says, and the checksum.

The checksum: a file cannot hold its own hash, so the card's `sha256` is the SHA-256 of the final
.onnx file with the card's 64 hash characters read as zeros. The hash is computed with zeros there,
then written over them; the protobuf string keeps its length, so every other byte of the file --
graph, weights and the rest of the card, temperature included -- is covered. `file_sha256(path)`
recomputes it.

ONNX files are protobuf messages. Finding and replacing the card only needs the top-level fields of
the ModelProto, so this module walks them itself (`_fields`) instead of requiring the `onnx`
package: the reader installs with onnxruntime alone, and the byte-exact layout is what the hash is
about. A file that does not parse gives a ModelError naming it, before onnxruntime sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes, atomic_write_text, fsync_dir

CARD_KEY = "digitlab_card"
CARD_VERSION = 1
METADATA_FIELD = 14  # ModelProto.metadata_props (onnx.proto3)
GRAPH_FIELD = 7  # ModelProto.graph
ZERO_HASH = "0" * 64
INPUT = {"name": "image", "dtype": "float32", "shape": ["batch", 1, 28, 28],
         "description": "uint8 [N, 28, 28] pixels, ink bright on dark (MNIST convention); "
                        "the reader normalizes them with `normalization`"}
OUTPUT = {"name": "logits", "dtype": "float32", "shape": ["batch", 10],
          "description": "logits for digits 0-9; probabilities = softmax(logits / temperature)"}
# field -> the JSON types it may have; every card has all of them
SCHEMA: dict[str, tuple[type, ...]] = {
    "card_version": (int,), "name": (str,), "family": (str,), "format": (str,), "input": (dict,),
    "output": (dict,), "normalization": (dict,), "temperature": (int, float), "dataset": (str,),
    "split": (dict,), "training_data": (str,), "command": (str,), "seed": (int,), "sha256": (str,),
}
# pipeline_version: the reader pipeline (reader/pipeline.py) whose output the model trained on
OPTIONAL: dict[str, tuple[type, ...]] = {"test": (dict,), "calibration": (str,), "n_parameters": (int,),
                                         "pipeline_version": (int,)}
_ORT_DTYPES = {"tensor(float)": "float32"}


# ---------------------------------------------------------------------------- build
def build(family: str, fmt: str, normalization: dict, run: dict, **extra) -> dict:
    """A new card. `run` is the training run's record (config.json): dataset, split, seed, command."""
    split = run.get("split") or {}
    train, val = split.get("train_images"), split.get("val_images")
    dataset = run.get("dataset", "mnist")
    if train:
        text = f"{dataset} training split, {train:,} images"
        text += f" ({val:,} more held out for validation)" if val else " (no validation hold-out)"
    else:
        text = f"{dataset} training split (how it was split was not recorded)"
    return {"card_version": CARD_VERSION, "name": "digitlab digit model", "family": family, "format": fmt,
            "input": dict(INPUT), "output": dict(OUTPUT),
            "normalization": {"mean": float(normalization["mean"]), "std": float(normalization["std"])},
            "temperature": 1.0, "dataset": dataset, "split": split,
            "training_data": text + "; the test split is used only for the figures in `test`",
            "command": run.get("command", ""), "seed": int(run.get("seed", 0)), **extra, "sha256": ZERO_HASH}


# ---------------------------------------------------------------------------- validate
def validate(card: dict, name: str | os.PathLike = "model card") -> dict:
    """Raises ModelError (naming `name`) unless `card` has every field, of the right type and range."""
    if not isinstance(card, dict):
        raise ModelError(f"{name}: model card is not a JSON object")
    for field, types in [*SCHEMA.items(), *OPTIONAL.items()]:
        if field not in card:
            if field in SCHEMA:
                raise ModelError(f"{name}: model card lacks {field!r}")
            continue
        if not isinstance(card[field], types) or isinstance(card[field], bool):
            raise ModelError(f"{name}: model card field {field!r} has the wrong type")
    if card["card_version"] > CARD_VERSION:
        raise ModelError(f"{name}: model card version {card['card_version']} is newer than this digitlab reads")
    norm = card["normalization"]
    if not all(isinstance(norm.get(k), (int, float)) for k in ("mean", "std")) or norm["std"] <= 0:
        raise ModelError(f"{name}: model card normalization needs a mean and a positive std")
    if not 0 < card["temperature"] < 100:
        raise ModelError(f"{name}: model card temperature {card['temperature']} is out of range")
    for key, expected in (("input", INPUT), ("output", OUTPUT)):
        if {k: card[key].get(k) for k in ("name", "dtype", "shape")} != {k: expected[k] for k in
                                                                         ("name", "dtype", "shape")}:
            raise ModelError(f"{name}: model card {key} {card[key]} is not the reader's "
                             f"{expected['dtype']} {expected['shape']}")
    sha = card["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelError(f"{name}: model card sha256 is not a SHA-256 hex digest")
    return card


def check_session(session, card: dict, name: str | os.PathLike) -> None:
    """The network's one input and first output have the dtypes and shapes the card declares."""
    for key, nodes in (("input", session.get_inputs()), ("output", session.get_outputs())):
        expected = card[key]
        if key == "input" and len(nodes) != 1:
            raise ModelError(f"{name}: the network takes {len(nodes)} inputs; the card declares one")
        node = nodes[0]
        shape = [d if isinstance(d, int) else "batch" for d in node.shape]
        if _ORT_DTYPES.get(node.type) != expected["dtype"] or shape[1:] != expected["shape"][1:]:
            raise ModelError(f"{name}: the network's {key} is {node.type} {node.shape}, "
                             f"the card declares {expected['dtype']} {expected['shape']}")


# ---------------------------------------------------------------------------- protobuf walk
def _varint(data: bytes, pos: int, name) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ModelError(f"{name}: not a loadable ONNX model (truncated or not protobuf)")


def _fields(data: bytes, name) -> list[tuple[int, int, int, int]]:
    """(field number, record start, payload start, record end) of each top-level protobuf field."""
    fields, pos = [], 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos, name)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, end = _varint(data, pos, name)
        elif wire == 2:
            length, pos = _varint(data, pos, name)
            end = pos + length
        elif wire in (1, 5):
            end = pos + (8 if wire == 1 else 4)
        else:
            end = -1
        if number == 0 or end < 0 or end > len(data):
            raise ModelError(f"{name}: not a loadable ONNX model (truncated or not protobuf)")
        fields.append((number, start, pos, end))
        pos = end
    return fields


def _encode(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf record."""
    out, n = bytearray([number << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def _card_records(data: bytes, name) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """(record spans of our cards, byte span of the card's JSON): of every metadata_props entry
    keyed "digitlab_card", and the JSON of the last one (protobuf: the last one wins)."""
    fields = _fields(data, name)
    if not any(f[0] == GRAPH_FIELD for f in fields):
        raise ModelError(f"{name}: not a loadable ONNX model (no graph)")
    records, span = [], None
    for number, start, payload, end in fields:
        if number != METADATA_FIELD:
            continue
        entry = {n: (p, e) for n, _, p, e in _fields(data[payload:end], name)}
        if 1 in entry and data[payload + entry[1][0]:payload + entry[1][1]] == CARD_KEY.encode():
            records.append((start, end))
            span = (payload + entry[2][0], payload + entry[2][1]) if 2 in entry else None
    return records, span


def _hash_span(text: bytes, offset: int, name) -> tuple[int, int]:
    """Byte span of the 64 hash characters in the card JSON found at `offset`."""
    marker = b'"sha256": "'
    at = text.find(marker)
    if at < 0 or text.find(marker, at + 1) >= 0:
        raise ModelError(f"{name}: model card must hold exactly one sha256 field")
    start = offset + at + len(marker)
    return start, start + 64


def file_sha256(data: bytes, name: str | os.PathLike = "model") -> str:
    """The checksum a card records for these file bytes (see the module's docstring)."""
    _, span = _card_records(data, name)
    if span is None:
        return hashlib.sha256(data).hexdigest()
    start, end = _hash_span(data[span[0]:span[1]], span[0], name)
    return hashlib.sha256(data[:start] + ZERO_HASH.encode() + data[end:]).hexdigest()


def dumps(card: dict) -> str:
    return json.dumps(card, indent=2) + "\n"


# ---------------------------------------------------------------------------- write / read
def embed(onnx_bytes: bytes, card: dict, name: str | os.PathLike = "model") -> tuple[bytes, dict]:
    """The ONNX bytes with `card` inside (any earlier digitlab card removed) and its sha256 filled
    in; returns (file bytes, the final card)."""
    card = validate({**card, "sha256": ZERO_HASH}, name)
    records, _ = _card_records(onnx_bytes, name)
    for start, end in reversed(records):
        onnx_bytes = onnx_bytes[:start] + onnx_bytes[end:]
    entry = _encode(1, CARD_KEY.encode()) + _encode(2, dumps(card).encode())
    data = onnx_bytes + _encode(METADATA_FIELD, entry)  # protobuf: fields may come in any order
    digest = file_sha256(data, name)
    _, span = _card_records(data, name)
    start, end = _hash_span(data[span[0]:span[1]], span[0], name)
    return data[:start] + digest.encode() + data[end:], {**card, "sha256": digest}


def write(path: str | os.PathLike, onnx_bytes: bytes, card: dict) -> dict:
    """Writes MODEL.onnx (card inside), MODEL.json (the same card) and MODEL.md; returns the card."""
    path = Path(path)
    data, card = embed(onnx_bytes, card, path)
    atomic_write_bytes(path, data)
    atomic_write_text(path.with_suffix(".json"), dumps(card))
    atomic_write_text(path.with_suffix(".md"), markdown(card))
    return card


def publish(staging: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Moves a model written at `staging` (MODEL.onnx, .json, .md) to `path`, each file an atomic rename,
    the .onnx last: a program watching `path` sees the new model whole (its card is already beside it
    when the file changes). Returns `path`; the staging folder is removed when left empty."""
    staging, path = Path(staging), Path(path)
    for suffix in (".md", ".json", ".onnx"):
        os.replace(staging.with_suffix(suffix), path.with_suffix(suffix))
    fsync_dir(path.parent)
    with contextlib.suppress(OSError):
        staging.parent.rmdir()
    return path


def update(path: str | os.PathLike, **fields) -> dict:
    """Changes card fields of a written model (e.g. the temperature that calibration fitted): the
    network's bytes stay as they are; the card inside, beside and the Markdown are rewritten."""
    path = Path(path)
    data = path.read_bytes()
    return write(path, data, {**read_bytes(data, path), **fields})


def read_bytes(data: bytes, path: str | os.PathLike) -> dict:
    """The validated card of the model file `path` whose bytes are `data`: embedded and sidecar agree,
    schema, checksum. Raises ModelError naming the file."""
    path = Path(path)
    _, span = _card_records(data, path)
    if span is None:
        raise ModelError(f"{path}: no digitlab model card inside (export it with `digitlab export`)")
    text = data[span[0]:span[1]]
    try:
        card = json.loads(text)
    except ValueError:
        raise ModelError(f"{path}: model card inside is not valid JSON") from None
    validate(card, path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and sidecar.read_bytes() != text:
        raise ModelError(f"{path}: the model card beside it ({sidecar.name}) differs from the one inside")
    if file_sha256(data, path) != card["sha256"]:
        raise ModelError(f"{path}: checksum mismatch: the file is damaged or was changed after its card was "
                         f"written")
    return card


def read(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX model not found")
    return read_bytes(path.read_bytes(), path)


# ---------------------------------------------------------------------------- Markdown
def markdown(card: dict) -> str:
    test = card.get("test")
    figures = "Not measured yet."
    rows = ""
    if test:
        figures = (f"Test accuracy ({card['dataset']} test split, {test['n']:,} images, measured on this ONNX "
                   f"file with onnxruntime): **{test['accuracy']:.4f}**")
        rows = "\n## Per-class recall\n\n| digit | recall |\n|---|---|\n" + "\n".join(
            f"| {c} | {r:.4f} |" for c, r in test["per_class_recall"].items()) + "\n"
    config = "\n".join(f"- `{k}`: {v}" for k, v in card.get("config", {}).items())
    norm = card["normalization"]
    lines = [f"# {card['name']} ({card['family']})", "", figures, "",
             f"- Format: {card['format']}",
             f"- Input: `{card['input']['name']}` {card['input']['dtype']} {card['input']['shape']}: "
             f"{card['input']['description']}",
             f"- Output: `{card['output']['name']}` {card['output']['dtype']} {card['output']['shape']}: "
             f"{card['output']['description']}",
             f"- Normalization: (pixel / 255 - {norm['mean']}) / {norm['std']}",
             f"- Temperature: {card['temperature']}" + (f" ({card['calibration']})" if card.get("calibration") else ""),
             f"- Training data: {card['training_data']}",
             f"- Seed: {card['seed']}" + (f"; training time: {round(card['train_time_s'])} s"
                                          if card.get("train_time_s") else ""),
             f"- Rebuild: `{card['command']}`"]
    if card.get("n_parameters"):
        lines.insert(5, f"- Parameters: {card['n_parameters']:,}")
    if card.get("pipeline_version"):
        lines.append(f"- Trained through the reader's pipeline v{card['pipeline_version']} "
                     "(what `digitlab.reader.pipeline` makes of an image; another version warns on loading)")
    if card.get("exported"):
        lines.append(f"- Exported: {card['exported']} ({card.get('environment', '')})")
    lines.append(f"- SHA-256 (of the .onnx file with this field read as zeros): `{card['sha256']}`")
    text = "\n".join(lines) + "\n" + fine_tuning_markdown(card.get("fine_tuning")) + rows
    if card.get("architecture"):
        text += f"\n## Architecture\n\n```\n{card['architecture']}\n```\n"
    if config:
        text += f"\n## Training configuration\n\n{config}\n"
    return text


def fine_tuning_markdown(ft: dict | None) -> str:
    """A fine-tuned model's section (`digitlab finetune`): base model, data, settings, before and after."""
    if not ft:
        return ""
    b, a = ft["before"], ft["after"]

    def fig(d: dict, key: str) -> str:
        return f"{d[key]:.4f}" if key in d else "(measured on export)"

    settings = ", ".join(f"{k}={v}" for k, v in ft["settings"].items())
    return f"""
## Fine-tuning

- Base model: {ft['base_model']}
- Data: {ft['n_images']} images from {ft['images']} (per digit {ft['per_class']})
- Settings: {settings}

| | before | after |
|---|---|---|
| MNIST test accuracy | {fig(b, 'mnist_test_accuracy')} | {fig(a, 'mnist_test_accuracy')} |
| accuracy on the fine-tuning images | {fig(b, 'own_images_accuracy')} | {fig(a, 'own_images_accuracy')} |

{ft.get('note', '')}
"""
