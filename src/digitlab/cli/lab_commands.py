"""The lab's commands: train, lr-find, evaluate, report, benchmark, export.

Building their parsers imports only the lab's table of family names (digitlab.lab.models, which
imports no model): each command imports what it needs when it runs, so that `digitlab predict` (and
the parser every command builds) starts without torch, scikit-learn or the data registry, and a
missing extra is named before any work starts (digitlab.extras).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from digitlab import card as model_card
from digitlab.errors import DigitlabError, ModelError
from digitlab.extras import require
from digitlab.files import atomic_write_json, read_json
from digitlab.lab.models import BUNDLED, FAMILIES, resolve  # no model, torch or scikit-learn is imported


# ---------------------------------------------------------------------------- train
def _set_threads(args: argparse.Namespace) -> None:
    """--threads, for this process: torch's intra-op threads and every BLAS and OpenMP pool loaded
    (OpenBLAS under numpy and scikit-learn). The caller's choice: the lab never sets it behind your back.

    On a busy 2-core machine two OpenBLAS threads fight the other processes for the cores: an
    mlp-sklearn epoch took 4x as long with 2 threads as with 1 (BENCHMARKS.md, "Current figures")."""
    if not args.threads:
        return
    from threadpoolctl import threadpool_limits

    # The pools loaded by now: numpy's and scipy's OpenBLAS, scikit-learn's OpenMP, and torch's when
    # the family is a neural one (_require_family imported it; the classical families never do).
    threadpool_limits(args.threads)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> int:
    _require_family(f"train {args.model}", args.model)
    from digitlab.lab import distributed

    if args.nproc < 1:
        raise ModelError(f"--nproc {args.nproc}: must be at least 1")
    if args.nproc > 1 and not distributed.launched():  # start the ranks, each running this same command
        from digitlab.lab import models

        if not models.family_class(args.model).trains_in_epochs:  # said once here, not by every rank
            raise ModelError(f"{args.model} trains in one step: --nproc is for neural families")
        import shlex

        return distributed.launch(shlex.split(args.command_line)[1:], args.nproc, args.threads)
    if not distributed.launched():
        return _train(args)
    args.device = distributed.init_from_env(args.device)  # a rank of torchrun or --nproc
    try:
        if distributed.world()[0] != 0:  # rank 0 speaks for the run
            sys.stdout = open(os.devnull, "w")  # for the life of this rank
        return _train(args)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace) -> int:
    from digitlab.lab.distributed import is_main
    from digitlab.lab.experiment import parse_setting, train_run

    out = args.out or f"runs/{args.model}-{args.dataset}-seed{args.seed}"
    settings = {"epochs": args.epochs, "dropout": args.dropout, "lr": args.lr, "batch_size": args.batch_size,
                "precision": args.precision}
    settings.update(parse_setting(s) for s in args.set)
    _set_threads(args)
    _, m = train_run(args.model, out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                     limit=args.limit, holdout=not args.no_holdout, resume=args.resume, device=args.device,
                     command=args.command_line, progress=is_main(), **_from_model(args), **settings)
    if not is_main():
        return 0
    if m.get("lr_finder_suggestion"):
        print(f"LR finder: peak learning rate {m['lr_finder_suggestion']:.2e}")
    val = f"val accuracy {m['val_accuracy']:.4f}  " if m["val_accuracy"] is not None else ""
    print(f"{args.model} on {args.dataset}: {val}test accuracy {m['test_accuracy']:.4f}  "
          f"({m['train_time_s']:.1f}s training, {m['train_images_per_s'] or 0:.0f} images/s)")
    print(f"saved to {out}")
    return 0


def _require_family(what: str, family: str) -> None:
    """Fails at once when the family's extra is missing: importing the family raises for torch (neural
    families) or scikit-learn (the rest); safetensors would only be imported to save the model."""
    from digitlab.lab import models

    if family in models.FAMILIES:  # an unknown name gets its error, with the list, from train_run
        neural = models.family_class(family).trains_in_epochs
        require(what, "sklearn")  # every family: the lab's models are scikit-learn estimators
        if neural:
            require(what, "safetensors")


def _from_model(args: argparse.Namespace) -> dict:
    """train --from: start from a trained model's body and fine-tune (experiment.train_run)."""
    if not args.from_model:
        return {}
    return {"from_model": args.from_model, "freeze_epochs": args.freeze_epochs}


def cmd_lr_find(args: argparse.Namespace) -> int:
    _require_family(f"lr-find {args.model}", args.model)
    require("lr-find", "matplotlib")
    from digitlab.lab.experiment import find_lr
    from digitlab.lab.lr_finder import save_lr_plot  # imports torch: only when this command runs

    _set_threads(args)
    result = find_lr(args.model, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                     device=args.device, batch_size=args.batch_size, precision=args.precision)
    save_lr_plot(result, args.out)
    print(f"suggested learning rate: {result['suggestion']:.2e} (steepest descent {result['steepest']:.2e}, "
          f"minimum loss at {result['min_loss_lr']:.2e}); plot: {args.out}")
    return 0


def add_train_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False, parents=[data_dir])
    common.add_argument("model", help="model family, one of: " + ", ".join(FAMILIES))
    common.add_argument("--dataset", default="mnist", help="dataset name (digitlab data list)")
    common.add_argument("--seed", type=int, default=0,
                        help="seeds the validation hold-out, the initial weights and the batch order")
    common.add_argument("--batch-size", type=int, help="default: the family's")
    common.add_argument("--device", help="where a neural family trains: cpu (default), cuda, cuda:1, ...")
    common.add_argument("--threads", type=int, help="CPU threads for torch and for BLAS (numpy, scikit-learn) "
                        "(default: one per core; 1 is fastest on a busy machine)")
    common.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="auto (default): bf16 autocast where the CPU/GPU computes bf16 natively "
                             "(AVX-512 BF16, AMX), float32 elsewhere")

    p = commands.add_parser("train", parents=[common], help="train a model, save it, report test accuracy")
    p.add_argument("--out", help="model folder to write (default runs/MODEL-DATASET-seedS)")
    p.add_argument("--epochs", type=int, help="default: the family's")
    p.add_argument("--lr", type=float, help="peak learning rate; 0 runs the LR finder first (default: the family's)")
    p.add_argument("--dropout", type=float, help="dropout probability (mlp, cnn, best; default: the family's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting of the family, e.g. --set widths=24,48,96 --set optimizer=sgd (repeatable; "
                        "default: the family's settings)")
    p.add_argument("--no-holdout", action="store_true",
                   help="train on the whole training split (a final model): no validation images held out")
    p.add_argument("--limit", type=int, help="train on the first N training images only, for smoke tests "
                   "(default: all of them)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint at the next epoch")
    p.add_argument("--from", dest="from_model", metavar="MODEL_DIR",
                   help="start from this trained model's body (same family, any dataset) and fine-tune: "
                        "the new head first with the body frozen, then all layers with lower LRs early "
                        "(default: start from random weights)")
    p.add_argument("--freeze-epochs", type=int, default=1, help="with --from: head-only epochs first (default 1)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train on N processes of this machine with DistributedDataParallel (gloo on the CPU, "
                        "nccl on CUDA); several machines: torchrun -m digitlab.cli train ... (README)")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("lr-find", parents=[common], help="LR range test: plot loss against learning rate")
    p.add_argument("--out", default="lr-find.png", help="plot file (default lr-find.png)")
    p.set_defaults(func=cmd_lr_find)


# ---------------------------------------------------------------------------- lab: evaluate, report, benchmark
def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.model_dir != BUNDLED and not args.model_dir.endswith(".onnx"):  # an ONNX model needs no lab extra
        require("evaluate", "sklearn")
    from digitlab.lab.evaluate import evaluate_directory, summary_text

    result = evaluate_directory(resolve(args.model_dir), args.dataset, args.data_dir)
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
    require("report", "matplotlib")  # the plots come after evaluating every model: fail before
    from digitlab.lab.report import write_report

    targets = [resolve(d) for d in args.model_dirs]
    path = write_report(targets, args.out, args.dataset, args.data_dir)
    print(f"report -> {path}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    require("benchmark", "sklearn")
    from digitlab.lab.benchmark import run_benchmark

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.threads:
        from digitlab.lab import models

        for name in names:  # imports torch for a neural family, so that --threads reaches its pool too
            if name in models.FAMILIES:
                models.family_class(name)
        _set_threads(args)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    result = run_benchmark(names, args.dataset, args.out, seeds, args.limit, args.epochs_scale, args.data_dir,
                           log=lambda line: print(line, file=sys.stderr))
    if result["runs"]:
        print((Path(args.out) / "benchmark.md").read_text(encoding="utf-8"), end="")
        print(f"benchmark -> {Path(args.out) / 'benchmark.json'} ({len(result['runs'])} runs)")
    for failure in result["failures"]:
        print(f"digitlab: error: {failure['model']} (seed {failure['seed']}) failed: {failure['error']}",
              file=sys.stderr)
    return 1 if result["failures"] else 0


def add_lab_classic_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    p = commands.add_parser("evaluate", parents=[data_dir], help="test-set metrics of a trained model")
    p.add_argument("model_dir", help='a model folder, an exported .onnx file, or "bundled"')
    p.add_argument("--dataset", default=None, help="default: the one in metrics.json, else mnist")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)
    p = commands.add_parser("report", parents=[data_dir], help="one self-contained HTML report of models")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help='model folders, .onnx files or "bundled"')
    p.add_argument("--dataset", default=None, help="default: the one in metrics.json, else mnist")
    p.add_argument("--out", default="report.html", help="the HTML file to write")
    p.set_defaults(func=cmd_report)
    p = commands.add_parser("benchmark", parents=[data_dir], help="train, evaluate and compare model families")
    p.add_argument("--models", default="knn,mlp-sklearn,mlp,cnn,resnet34", help="comma-separated families")
    p.add_argument("--dataset", default="mnist", help="dataset name (digitlab data list)")
    p.add_argument("--out", default="benchmark", help="folder for the models, benchmark.json and benchmark.md")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images only (default: all; the test split is always whole)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply each family's epoch budget")
    p.add_argument("--threads", type=int, help="CPU threads for torch and for BLAS (numpy, scikit-learn) "
                   "(default: one per core; 1 is fastest on a busy machine)")
    p.set_defaults(func=cmd_benchmark)


# ---------------------------------------------------------------------------- own model: export
def cmd_export(args: argparse.Namespace) -> int:
    require("export", "torch", "safetensors", "onnx", "onnxscript")
    from digitlab.lab.export import export

    path = export_bundle(args) if args.bundle else export(args.model_dir, out=args.out, quantize=args.quantize)
    card = model_card.read(path)
    print(f"{args.model_dir} -> {path} ({path.stat().st_size / 1e3:.0f} kB, {card['format']}); "
          f"test accuracy {card['test']['accuracy']:.4f}; card {path.with_suffix('.json')}, {path.with_suffix('.md')}")
    return 0


def export_bundle(args: argparse.Namespace) -> Path:
    """--bundle: export beside the shipped model, and replace it only if the new one is at least as
    accurate on the MNIST test set (both cards' `test.accuracy`), or with --force."""
    from digitlab.lab.export import export
    from digitlab.reader import infer

    shipped = infer.BUNDLED
    with tempfile.TemporaryDirectory(dir=shipped.parent, prefix=".export-") as tmp:  # same file system: rename
        staged = export(args.model_dir, out=Path(tmp) / shipped.name, quantize=args.quantize, bundle=True)
        new = model_card.read(staged)["test"]["accuracy"]
        try:
            old = model_card.read(shipped)["test"]["accuracy"] if shipped.is_file() else None
        except ModelError:  # a damaged shipped model has no accuracy worth keeping
            old = None
        if old is not None and new < old and not args.force:
            raise ModelError(f"{args.model_dir}: test accuracy {100 * new:.2f}% is below the shipped model's "
                             f"{100 * old:.2f}%; {shipped} left as it is (--force replaces it anyway)")
        for suffix in (".json", ".md", ".onnx"):  # the model last: a crash between leaves the old model working
            os.replace(staged.with_suffix(suffix), shipped.with_suffix(suffix))
    return shipped


def add_own_model_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    p = commands.add_parser("export", help="export a trained neural model to ONNX with its model card")
    p.add_argument("model_dir", help="a trained model directory (config.json + weights)")
    p.add_argument("--quantize", choices=["int8"], help="static int8 quantization calibrated on training images "
                   "(default: none, float32)")
    p.add_argument("--out", help="output .onnx file (default: MODEL_DIR/model.onnx or model-int8.onnx)")
    p.add_argument("--bundle", action="store_true", help="write it as the model shipped with digitlab "
                   "(refused if less accurate than the shipped one)")
    p.add_argument("--force", action="store_true", help="with --bundle: replace the shipped model even if worse")
    p.set_defaults(func=cmd_export)

    from digitlab.lab.lines import LinesConfig  # the recipe's defaults (lines.py imports torch only to train)

    d = LinesConfig()
    p = commands.add_parser("train-lines", help="train the reader's line finder (printed lines vs handwriting)")
    p.add_argument("--out", default="runs/lines", help="output folder for line-model.onnx and its card")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps")
    p.add_argument("--pages", type=int, default=d.pages, help="pages drawn to train on (from MNIST training digits)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--bundle", action="store_true", help="also write it as the line finder shipped with digitlab")
    p.set_defaults(func=cmd_train_lines)


def cmd_train_lines(args: argparse.Namespace) -> int:
    require("train-lines", "torch", "onnx", "onnxscript")
    import shlex
    import sys

    from digitlab.lab.lines import LinesConfig, train_lines

    config = LinesConfig(steps=args.steps, pages=args.pages, seed=args.seed)
    command = "digitlab " + shlex.join(sys.argv[1:])
    figures = train_lines(args.out, config, bundle=args.bundle, command=command)
    print(f"line finder -> {figures['onnx']}: on {figures['held_out_pages']} held-out pages, line pixels found "
          f"{100 * figures['line_recall']:.1f}% (precision {100 * figures['line_precision']:.1f}%), handwriting "
          f"kept {100 * figures['handwriting_kept']:.1f}%; {figures['train_time_s']:.0f}s training")
    return 0


# ---------------------------------------------------------------------------- finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    require("finetune", "torch", "safetensors", "onnx", "onnxscript")
    from digitlab.lab.finetune import FinetuneConfig, finetune

    if args.user is not None and args.feedback is None:
        raise DigitlabError("--user picks one person's corrections: it needs --feedback DB")
    for name in ("steps", "rehearsal", "min_per_class"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise DigitlabError(f"--{name.replace('_', '-')} must be 0 or more")
    if args.lr is not None and args.lr <= 0:
        raise DigitlabError("--lr must be positive")
    source = Path(args.images).resolve().name if args.images else (args.user or Path(args.feedback).stem)
    out = args.out or f"runs/finetuned-{source}"
    given = {k: v for k, v in {"method": args.method, "steps": args.steps, "epochs": args.epochs,
                               "freeze_epochs": args.freeze_epochs, "lr": args.lr, "rehearsal": args.rehearsal,
                               "min_per_class": args.min_per_class, "seed": args.seed}.items() if v is not None}
    config = FinetuneConfig(**given)
    m = finetune(args.model, args.images, out, config, args.data_dir, command=args.command_line,
                 feedback=args.feedback, user=args.user)
    ft = m["fine_tuning"]
    b, a = ft["before"], ft["after"]
    print(f"fine-tuned {args.model} on {ft['n_images']} images in {m['train_time_s']:.1f}s "
          f"({m['total_time_s']:.1f}s in all)")
    print(f"  your images:  {b['own_images_accuracy']:.4f} -> {a['own_images_accuracy']:.4f} (not held out)")
    print(f"  MNIST test:   {b['mnist_test_accuracy']:.4f} -> {a['mnist_test_accuracy']:.4f}")
    print(f"saved to {out}; ONNX {m['onnx']} (card {Path(m['onnx']).with_suffix('.md')})")
    return 0


def add_finetune_command(commands, data_dir: argparse.ArgumentParser) -> None:
    p = commands.add_parser("finetune", parents=[data_dir],
                            help="teach a trained model your handwriting from labelled images or stored corrections")
    p.add_argument("model", help='"bundled", an exported .onnx file, or a trained model directory')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="labelled images: DIR/0/*.png ... DIR/9/*.png "
                        "(default: none; give this or --feedback)")
    source.add_argument("--feedback", metavar="DB", help="the corrections `digitlab serve` stored (its "
                        "--feedback-db SQLite file): no export step (default: none; give this or --images)")
    p.add_argument("--user", help="with --feedback: only this user's corrections (the pad's ?user=NAME; "
                   "default: everyone's)")
    p.add_argument("--out", help="model folder to write (default runs/finetuned-<DIR name or user>); "
                   "`digitlab serve --models` serves OUT's parent folder")
    # the defaults are FinetuneConfig's (lab/finetune.py), not imported here: building the parser must not
    # import torch (`digitlab predict` starts without it)
    p.add_argument("--method", choices=["style", "fastai", "all", "head"], help="style: views of your examples "
                   "that keep your style, the base's answers kept on rehearsed MNIST images (default); fastai: the "
                   "head, then all layers with discriminative LRs; all: one LR for every layer; head: the head only")
    p.add_argument("--steps", type=int, help="style: training steps (default 300, whatever the number of examples: "
                   "what fits the 30-second budget)")
    p.add_argument("--epochs", type=int, help="fastai/all/head: epochs on all layers after the head-only one "
                   "(default 2)")
    p.add_argument("--freeze-epochs", type=int, help="fastai/all/head: head-only epochs first (default 1)")
    p.add_argument("--lr", type=float, help="peak LR of the head (default: 3e-3 for style, 1e-3 for the others)")
    p.add_argument("--rehearsal", type=int, help="MNIST training images mixed in (default 3000)")
    p.add_argument("--min-per-class", type=int, help="fewest examples of each digit accepted (default 1)")
    p.add_argument("--seed", type=int, help="seeds the rehearsal images drawn, the views and the batch order "
                   "(default 0)")
    p.set_defaults(func=cmd_finetune)


def add_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    add_train_commands(commands, data_dir)
    add_lab_classic_commands(commands, data_dir)
    add_own_model_commands(commands, data_dir)
    add_finetune_command(commands, data_dir)
