"""The reader's commands: predict and serve. Torch-free, like the reader itself."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from PIL import Image

from digitlab import reader
from digitlab.data import image_files
from digitlab.errors import DigitlabError
from digitlab.files import atomic_write_bytes
from digitlab.serve import make_server


# ---------------------------------------------------------------------------- predict (reader)
def predict_inputs(paths: list[str]) -> list[tuple[str, object]]:
    """(name, source) per input: files as given, folders' images recursively, "-" = stdin's bytes."""

    inputs: list[tuple[str, object]] = []
    for p in paths:
        if p == "-":
            inputs.append(("-", sys.stdin.buffer.read()))
        elif Path(p).is_dir():
            inputs.extend((str(f), str(f)) for f in image_files(p))
        else:
            inputs.append((p, p))
    return inputs


def cmd_predict(args: argparse.Namespace) -> int:
    model = reader.get_model(args.model)
    explain = Path(args.explain) if args.explain else None
    failed = 0
    for n, (name, source) in enumerate(predict_inputs(args.paths)):
        try:
            if args.multi:
                result = reader.read(source, model, args.min_confidence)
                record = {"file": name, **result.as_dict()}
                seen = [d.image for d in result.digits]
                line = result.text or "no digit"
            else:
                result = reader.classify(source, model, args.min_confidence)
                record = {"file": name, **reader.as_dict(result)}
                seen = [result["image"]] if result["image"] is not None else []
                line = result["status"] if result["label"] is None else str(result["label"])
                line += f" ({100 * result['confidence']:.1f}%)" if result["probabilities"] else ""
            if explain:
                _write_explain(explain, n, name, seen)
        except DigitlabError as e:
            failed += 1
            record, line = {"file": name, "error": str(e)}, f"error: {e}"
        print(json.dumps(record) if args.json else f"{name}: {line}", flush=True)
    return 1 if failed else 0


def _write_explain(folder: Path, n: int, name: str, images: list) -> None:
    """The 28x28 image(s) the model saw, as PNGs named after the input."""
    stem = "stdin" if name == "-" else Path(name).stem
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        suffix = f"-{i}" if len(images) > 1 else ""
        atomic_write_bytes(folder / f"{n:03d}-{stem}{suffix}.png", buf.getvalue())


def add_predict_commands(commands) -> None:
    p = commands.add_parser("predict", help="read handwritten digits in image files (the bundled model)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive), or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--multi", action="store_true", help="read a row of digits as one number")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="abstain (label null / '?') below this confidence")
    p.add_argument("--explain", metavar="DIR", help="write the 28x28 image(s) the model saw here")
    p.add_argument("--model", metavar="M", help="an ONNX model file (default: the bundled model)")
    p.set_defaults(func=cmd_predict)


# ---------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    server = make_server(args.host, args.port, model=args.model)
    host, port = server.server_address[:2]
    print(f"digitlab: serving the drawing pad on http://{host}:{port}/ and the API on /api/predict, /api/read",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_serve_commands(commands) -> None:
    p = commands.add_parser("serve", help="REST API and web drawing pad")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--model", help="an ONNX model file (default: the bundled model)")
    p.set_defaults(func=cmd_serve)


def add_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    add_predict_commands(commands)
    add_serve_commands(commands)
