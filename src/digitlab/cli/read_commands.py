"""The reader's commands: predict and serve. Torch-free, like the reader itself."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from PIL import Image

from digitlab import reader
from digitlab.errors import DigitlabError
from digitlab.files import atomic_write_bytes


# ---------------------------------------------------------------------------- predict (reader)
def predict_inputs(paths: list[str]) -> list[tuple[str, object]]:
    """(name, source) per input: files as given, folders' images recursively, "-" = stdin's bytes."""

    inputs: list[tuple[str, object]] = []
    for p in paths:
        if p == "-":
            inputs.append(("-", sys.stdin.buffer.read()))
        elif Path(p).is_dir():
            from digitlab.data import image_files  # the data package (and its registry) only for folders

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
    # FastAPI and uvicorn are the `serve` extra: imported here so `digitlab predict` never needs them
    try:
        from digitlab.serve import ServeConfig, run
    except ImportError as e:
        raise DigitlabError(f"the service needs the serve extra: pip install 'digitlab[serve]' ({e})") from None

    for name in ("workers", "max_batch", "max_concurrent", "max_body_mb", "max_megapixels", "timeout",
                 "header_timeout"):
        if getattr(args, name) <= 0:
            raise DigitlabError(f"--{name.replace('_', '-')} must be positive")
    config = ServeConfig(model=args.model, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                         max_pixels=int(args.max_megapixels * 1_000_000), max_batch=args.max_batch,
                         max_concurrent=args.max_concurrent, request_timeout=args.timeout,
                         header_timeout=args.header_timeout,
                         feedback_db=args.feedback_db or ServeConfig().feedback_db, watch=args.watch,
                         reload_token=args.reload_token)
    try:
        run(config, args.host, args.port, workers=args.workers, announce=lambda line: print(line, flush=True),
            log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from digitlab.serve.config import default_feedback_db
    from digitlab.serve.feedback import export

    db = args.db or default_feedback_db()
    counts = export(db, args.dir)
    total = sum(counts.values())
    per_label = " ".join(f"{label}:{n}" for label, n in sorted(counts.items())) or "none"
    print(f"{total} correction{'s' if total != 1 else ''} from {db} -> {Path(args.dir) / '<label>'}/*.png  "
          f"(per label: {per_label})")
    return 0


def add_serve_commands(commands) -> None:
    from digitlab.serve.config import ServeConfig

    d = ServeConfig()
    p = commands.add_parser("serve", help="REST API and web drawing pad (FastAPI on uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--model", help="an ONNX model file (default: the bundled model); a fine-tuned export works too")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each loads the model once)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 1024 / 1024, help="request body limit")
    p.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6,
                   help="image size limit, read from the header before decoding")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per /v1/predict/batch request")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent, help="inferences at once per worker")
    p.add_argument("--timeout", type=float, default=d.request_timeout, help="seconds per request")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds a client may take to send its request headers (slowloris guard)")
    p.add_argument("--feedback-db", help="SQLite file for corrections (default: $DIGITLAB_FEEDBACK_DB or "
                   "~/.local/share/digitlab/feedback.sqlite3)")
    p.add_argument("--watch", action="store_true", help="reload the model when its file changes")
    p.add_argument("--reload-token", help="secret for POST /v1/model/reload (without: loopback clients only)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    fb = commands.add_parser("feedback", help="corrections collected by the service")
    fb_cmds = fb.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    p = fb_cmds.add_parser("export", help="write the corrections as a labelled image folder DIR/<label>/*.png")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--db", help="the SQLite file (default: as for serve)")
    p.set_defaults(func=cmd_feedback_export)


def add_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    add_predict_commands(commands)
    add_serve_commands(commands)
