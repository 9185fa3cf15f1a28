"""The `digitlab` command. Thin: parses arguments, calls the library, prints the result.

Heavy modules (torch, sklearn) are imported inside the commands that need them, so
`digitlab predict` and `digitlab --help` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .errors import DigitlabError


# ---------------------------------------------------------------------------- data
def cmd_data_list(args: argparse.Namespace) -> int:
    from .data import DATASETS, locate

    print(f"{'name':<15} {'train':>7} {'test':>7}  {'local copy':<45} description")
    for name, ds in DATASETS.items():
        folder = locate(name, args.data_dir)
        where = str(folder) if folder else "- (not present)"
        print(f"{name:<15} {ds.counts['train']:>7} {ds.counts['test']:>7}  {where:<45} {ds.description}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from .data import get, load

    ds = get(args.name)
    for split in ds.files:
        images, labels = load(args.name, split, args.data_dir)
        counts = np.bincount(labels, minlength=len(ds.classes))
        print(f"{split:<5} {len(images):>6} images {images.shape[1]}x{images.shape[2]}  "
              f"per class: {' '.join(str(c) for c in counts)}")
    print(f"{args.name}: all files present, checksums and counts OK")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from PIL import Image

    from .data import get, load
    from .files import atomic_write_bytes

    images, labels = load(args.name, args.split, args.data_dir)
    if not 0 <= args.index < len(images):
        raise DigitlabError(f"--index {args.index} out of range: {args.split} has {len(images)} images")
    image = Image.fromarray(images[args.index])
    if args.scale > 1:
        image = image.resize((28 * args.scale, 28 * args.scale), Image.NEAREST)
    import io

    buf = io.BytesIO()
    image.save(buf, format=_image_format(args.out))
    atomic_write_bytes(args.out, buf.getvalue())
    label = int(labels[args.index])
    name = get(args.name).classes[label]
    print(f"{args.name} {args.split}[{args.index}]: label {label} ({name}) -> {args.out}")
    return 0


def _image_format(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "webp": "WEBP",
               "tif": "TIFF", "tiff": "TIFF"}
    if suffix not in formats:
        raise DigitlabError(f"{path}: unknown image type {suffix!r}; use one of {', '.join(formats)}")
    return formats[suffix]


# ---------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from .experiment import train_run

    out = args.out or f"runs/{args.model}-{args.dataset}-seed{args.seed}"
    m = train_run(args.model, out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                  limit=args.limit, resume=args.resume, epochs=args.epochs, dropout=args.dropout, lr=args.lr,
                  batch_size=args.batch_size)
    if m.get("lr_finder_suggestion"):
        print(f"LR finder: peak learning rate {m['lr_finder_suggestion']:.2e}")
    val = f"val accuracy {m['val_accuracy']:.4f}  " if m["val_accuracy"] is not None else ""
    print(f"{args.model} on {args.dataset}: {val}test accuracy {m['test_accuracy']:.4f}  "
          f"({m['train_time_s']:.1f}s training, {m['train_images_per_s'] or 0:.0f} images/s)")
    print(f"saved to {out}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .experiment import find_lr
    from .train import save_lr_plot

    result = find_lr(args.model, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                     batch_size=args.batch_size)
    save_lr_plot(result, args.out)
    print(f"suggested learning rate: {result['suggestion']:.2e} (steepest descent {result['steepest']:.2e}, "
          f"minimum loss at {result['min_loss_lr']:.2e}); plot: {args.out}")
    return 0


def add_train_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    from .models import FAMILIES

    common = argparse.ArgumentParser(add_help=False, parents=[data_dir])
    common.add_argument("model", help=f"model family: {', '.join(FAMILIES)}")
    common.add_argument("--dataset", default="mnist", help="dataset name (digitlab data list), default mnist")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--batch-size", type=int, help="default: the family's")

    p = commands.add_parser("train", parents=[common], help="train a model, save it, report test accuracy")
    p.add_argument("--out", help="model folder to write (default runs/MODEL-DATASET-seedS)")
    p.add_argument("--epochs", type=int, help="default: the family's")
    p.add_argument("--lr", type=float, help="peak learning rate; 0 runs the LR finder first")
    p.add_argument("--dropout", type=float, help="dropout probability (mlp, cnn)")
    p.add_argument("--limit", type=int, help="train on the first N training images only (smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint at the next epoch")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("lr-find", parents=[common], help="LR range test: plot loss against learning rate")
    p.add_argument("--out", default="lr-find.png", help="plot file (default lr-find.png)")
    p.set_defaults(func=cmd_lr_find)
# ---------------------------------------------------------------------------- lab: evaluate, report, benchmark
def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_directory, summary_text
    from .files import atomic_write_json, read_json

    result = evaluate_directory(args.model_dir, args.dataset, args.data_dir)
    metrics = {"dataset": result.dataset, **result.interp.to_dict(), **result.speed}
    path = Path(args.model_dir) / "metrics.json"
    if Path(args.model_dir).is_dir():  # not for "bundled" or an .onnx file: the package stays read-only
        atomic_write_json(path, {**(read_json(path) if path.is_file() else {}), **metrics})
    if args.json:
        print(json.dumps({"model": result.family, **metrics}))
    else:
        print(f"{result.family} on {result.dataset} test: accuracy {result.interp.accuracy:.2%}, "
              f"macro-F1 {result.interp.macro_f1:.4f}, {result.speed['images_per_second']:,.0f} images/s\n")
        print(summary_text(result.interp))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.model_dirs, args.out, args.dataset, args.data_dir)
    print(f"report -> {path}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    result = run_benchmark(names, args.dataset, args.out, seeds, args.limit, args.epochs_scale, args.data_dir,
                           log=lambda line: print(line, file=sys.stderr))
    print((Path(args.out) / "benchmark.md").read_text(encoding="utf-8"), end="")
    print(f"benchmark -> {Path(args.out) / 'benchmark.json'} ({len(result['runs'])} runs)")
    return 0


def add_lab_classic_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    p = commands.add_parser("evaluate", parents=[data_dir], help="test-set metrics of a trained model")
    p.add_argument("model_dir", help='a model folder, an exported .onnx file, or "bundled"')
    p.add_argument("--dataset", default=None, help="default: the one in metrics.json, else mnist")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)
    p = commands.add_parser("report", parents=[data_dir], help="one self-contained HTML report of models")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    p.add_argument("--dataset", default=None, help="default: the one in metrics.json, else mnist")
    p.add_argument("--out", default="report.html")
    p.set_defaults(func=cmd_report)
    p = commands.add_parser("benchmark", parents=[data_dir], help="train, evaluate and compare model families")
    p.add_argument("--models", default="knn,mlp-sklearn,mlp,cnn,resnet34", help="comma-separated families")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--out", default="benchmark", help="folder for the models, benchmark.json and benchmark.md")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images only (the test split is always whole)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply each family's epoch budget")
    p.set_defaults(func=cmd_benchmark)
# ---------------------------------------------------------------------------- own model: export
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    path = export(args.model_dir, out=args.out, quantize=args.quantize, bundle=args.bundle)
    from .infer import read_card

    card = read_card(path)
    print(f"{args.model_dir} -> {path} ({path.stat().st_size / 1e3:.0f} kB, {card['format']}); "
          f"test accuracy {card['test']['accuracy']:.4f}; card {path.with_suffix('.json')}, {path.with_suffix('.md')}")
    return 0


def add_own_model_commands(commands) -> None:
    p = commands.add_parser("export", help="export a trained neural model to ONNX with its model card")
    p.add_argument("model_dir", help="a trained model directory (config.json + weights)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", choices=["int8"], help="static int8 quantization calibrated on training images")
    p.add_argument("--out", help="output .onnx file (default: MODEL_DIR/model.onnx or model-int8.onnx)")
    p.add_argument("--bundle", action="store_true", help="write it as the model shipped with digitlab")
    p.set_defaults(func=cmd_export)
# ---------------------------------------------------------------------------- predict (reader)
def predict_inputs(paths: list[str]) -> list[tuple[str, object]]:
    """(name, source) per input: files as given, folders' images recursively, "-" = stdin's bytes."""
    from .data import image_files

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
    import json

    from . import reader

    model = reader.get_model(args.model)
    explain = Path(args.explain) if args.explain else None
    failed = 0
    for n, (name, source) in enumerate(predict_inputs(args.paths)):
        try:
            if args.multi:
                result = reader.read(source, model, args.min_confidence)
                record = {"file": name, "text": result.text, "digits": [d.as_dict() for d in result.digits]}
                seen = [d.image for d in result.digits]
                line = result.text or "no digit"
            else:
                result = reader.classify(source, model, args.min_confidence)
                record = {"file": name, "label": result["label"], "confidence": round(result["confidence"], 4),
                          "probabilities": [round(p, 4) for p in result["probabilities"] or []]}
                if result["status"] != "ok":
                    record["status"] = result["status"]
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
    import io

    from PIL import Image

    from .files import atomic_write_bytes

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
    from .serve import make_server

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


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitlab", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help="folder holding the dataset (or its parent); "
                          "default: $DIGITLAB_DATA/<name>, then ~/.cache/digitlab/<name>")
    data_dir.add_argument("--no-download", action="store_true", help="never fetch missing files")

    data = commands.add_parser("data", help="list, verify and look at datasets")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_cmds.add_parser("list", parents=[data_dir], help="the registry and what is present locally")
    p.set_defaults(func=cmd_data_list)
    p = data_cmds.add_parser("verify", parents=[data_dir], help="checksums and counts per split and class")
    p.add_argument("name")
    p.set_defaults(func=cmd_data_verify)
    p = data_cmds.add_parser("show", parents=[data_dir], help="write one image of a dataset to a file")
    p.add_argument("name")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--scale", type=int, default=1, help="upscale factor for viewing")
    p.add_argument("--out", required=True, help="output image (.png, .jpg, ...)")
    p.set_defaults(func=cmd_data_show)
    add_train_commands(commands, data_dir)
    add_lab_classic_commands(commands, data_dir)
    add_own_model_commands(commands)
    add_predict_commands(commands)
    add_serve_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "no_download", False):
        os.environ["DIGITLAB_OFFLINE"] = "1"  # every data.load of this command stays local
    try:
        return args.func(args)
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"digitlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
