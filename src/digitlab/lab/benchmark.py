"""Train and evaluate several model families the same way; write benchmark.json and a Markdown table.

Every model gets the same seeded train/validation split (`data.train_val_split`), is timed while
fitting and while predicting the whole test set, and is saved with its metrics.json beside it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import numpy as np

from digitlab.files import atomic_write_json, atomic_write_text, read_json

# Test accuracy (%) the study reports for a family on MNIST; "-" where it gives none.
REFERENCE = {"mnist": {"knn": 96.88, "mlp-sklearn": 89.06, "mlp": 97.72, "cnn": 99.4, "resnet34": 99.31}}


def weights_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("weights.*"))


def run_one(name: str, seed: int, dataset: str, out: Path, epochs_scale: float, limit: int | None,
            data_dir: str | None) -> dict:
    """Trains one model with one seed (the same run as `digitlab train`), returns its benchmark row."""
    from . import models
    from .experiment import train_run

    defaults = models.family_class(name).Config()
    overrides = {}
    for field in ("epochs", "max_iter"):  # the families' epoch budgets: scaled down for smoke runs
        if epochs_scale != 1 and hasattr(defaults, field):
            overrides[field] = max(1, round(getattr(defaults, field) * epochs_scale))
    directory = out / name if seed == 0 else out / f"{name}-seed{seed}"
    model, m = train_run(name, directory, dataset, data_dir, seed=seed, limit=limit, progress=False, **overrides)
    return {"model": name, "seed": seed, "directory": str(directory), "reference": REFERENCE.get(dataset, {}).get(name),
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_incorrect": m["n_incorrect"],
            "train_seconds": m["fit_wall_s"], "images_per_second": m["images_per_second"],
            "n_parameters": m["n_parameters"], "file_bytes": weights_size(directory),
            "config": dataclasses.asdict(model.config), "train_images": m["train_images"],
            "val_images": m["val_images"], "test_images": m["n"]}


def run_benchmark(names: list[str], dataset: str = "mnist", out: str | os.PathLike = "benchmark",
                  seeds: tuple[int, ...] = (0,), limit: int | None = None, epochs_scale: float = 1.0,
                  data_dir: str | None = None, log=print) -> dict:
    """Every family in `names`, for every seed: train (on at most `limit` images), evaluate on the
    full test split, and write benchmark.json and benchmark.md into `out`. Runs of other families or
    seeds already in `out/benchmark.json` (same dataset) are kept: one family or seed can be added alone."""
    from digitlab.data import load

    from . import models

    for name in names:  # an unknown family fails before anything is trained
        models.family_class(name)
    load(dataset, "test", data_dir)  # and so does missing data
    out = Path(out)
    previous = out / "benchmark.json"
    kept = []  # runs of other families or seeds from an earlier benchmark in `out`
    if previous.is_file():
        old = read_json(previous)
        if old.get("dataset") == dataset:
            kept = old["runs"]
    runs, failures = [], []
    for name in names:
        for seed in seeds:
            log(f"{name} (seed {seed}): training ...")
            try:
                row = run_one(name, seed, dataset, out, epochs_scale, limit, data_dir)
            except Exception as e:  # one family failing must not cost the rows already finished
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                failures.append({"model": name, "seed": seed, "error": f"{type(e).__name__}: {message}"})
                log(f"{name} (seed {seed}): FAILED: {failures[-1]['error']}")
                continue
            log(f"{name} (seed {seed}): test accuracy {row['accuracy']:.2%}, {row['train_seconds']:.1f}s training")
            runs.append(row)
            # Written after every run: an interrupted benchmark keeps what it finished.
            _write(out, dataset, epochs_scale, kept, runs, failures)
    return _write(out, dataset, epochs_scale, kept, runs, failures)


def _write(out: Path, dataset: str, epochs_scale: float, kept: list[dict], runs: list[dict],
           failures: list[dict]) -> dict:
    done = {(r["model"], r["seed"]) for r in runs}
    runs = [r for r in kept if (r["model"], r["seed"]) not in done] + runs
    result = {"dataset": dataset, "test_images": runs[0]["test_images"] if runs else None,
              "seeds": sorted({r["seed"] for r in runs}), "epochs_scale": epochs_scale, "machine": machine(),
              "runs": runs, "summary": summarize(runs), "failures": failures}
    if runs:
        atomic_write_json(out / "benchmark.json", result)
        atomic_write_text(out / "benchmark.md", markdown(result))
    return result


def summarize(runs: list[dict]) -> list[dict]:
    """One row per model: means over seeds (and the spread of the accuracy)."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == name]
        acc = np.array([r["accuracy"] for r in mine])
        rows.append({"model": name, "reference": mine[0]["reference"], "seeds": len(mine),
                     "accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
                     **{k: float(np.mean([r[k] for r in mine]))
                        for k in ("macro_f1", "train_seconds", "images_per_second")},
                     "n_parameters": mine[0]["n_parameters"], "file_bytes": mine[0]["file_bytes"],
                     "train_images": mine[0]["train_images"]})
    return rows


def markdown(result: dict) -> str:
    failed = "".join(f"\nFAILED: {f['model']} (seed {f['seed']}): {f['error']}" for f in result.get("failures", []))
    lines = [f"Dataset: {result['dataset']} ({result['test_images']} test images), seeds {result['seeds']}, "
             f"machine: {result['machine']}. Models that hold out a validation split train on the rest.", "",
             "| model | reference | test accuracy | macro-F1 | training images | training time (s) "
             "| prediction (images/s) | parameters | model file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]:
        ref = f"{r['reference']:.2f}%" if r["reference"] is not None else "-"
        spread = f" ± {100 * r['accuracy_std']:.2f}" if r["seeds"] > 1 else ""
        lines.append(f"| {r['model']} | {ref} | {100 * r['accuracy']:.2f}%{spread} | {r['macro_f1']:.4f} "
                     f"| {r['train_images']:,} | {r['train_seconds']:.1f} | {r['images_per_second']:,.0f} "
                     f"| {r['n_parameters']:,} | {r['file_bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines) + "\n" + (failed[1:] + "\n" if failed else "")


def machine() -> str:
    """Where the figures were measured: CPU, BLAS kernel and threads, load average."""
    from digitlab.machine import compute_libraries, describe

    return f"{describe()}; {platform.machine()}, Python {platform.python_version()}; {compute_libraries()}"
