"""Train and evaluate several model families the same way; write benchmark.json and a Markdown table.

Every model gets the same seeded train/validation split (`data.train_val_split`), is timed while
fitting and while predicting the whole test set, and is saved with its metrics.json beside it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np

from .files import atomic_write_json, atomic_write_text

# Test accuracy (%) the study reports for a family; "-" where it gives none.
REFERENCE = {"knn": 96.88, "mlp-sklearn": 89.06}


def weights_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("weights.*"))


def run_one(name: str, seed: int, data: tuple, dataset: str, out: Path, epochs_scale: float, val_size: int) -> dict:
    """Trains one model with one seed, saves it with its metrics.json, returns its benchmark row."""
    from . import models
    from .data import get, train_val_split
    from .evaluate import evaluate_model

    (x, y), (xt, yt) = data
    defaults = models.family_class(name).Config()
    overrides = {"seed": seed}
    for field in ("epochs", "max_iter"):  # the families' epoch budgets: scaled down for smoke runs
        if epochs_scale != 1 and hasattr(defaults, field):
            overrides[field] = max(1, round(getattr(defaults, field) * epochs_scale))
    model = models.create(name, **overrides)
    (xa, ya), (xv, yv) = train_val_split(x, y, val_size, seed)
    start = time.perf_counter()
    model.fit(xa, ya, xv, yv)
    train_seconds = time.perf_counter() - start
    directory = model.save(out / name if seed == 0 else out / f"{name}-seed{seed}")
    interp, speed = evaluate_model(model, xt, yt, get(dataset).classes)
    row = {"model": name, "seed": seed, "directory": str(directory), "reference": REFERENCE.get(name),
           "accuracy": interp.accuracy, "macro_f1": interp.macro_f1, "n_incorrect": interp.n_incorrect,
           "train_seconds": train_seconds, "images_per_second": speed["images_per_second"],
           "n_parameters": model.n_parameters(), "file_bytes": weights_size(directory),
           "config": dataclasses.asdict(model.config)}
    atomic_write_json(directory / "metrics.json", {"dataset": dataset, **row, **speed, **interp.to_dict()})
    return row


def run_benchmark(names: list[str], dataset: str = "mnist", out: str | os.PathLike = "benchmark",
                  seeds: tuple[int, ...] = (0,), limit: int | None = None, epochs_scale: float = 1.0,
                  data_dir: str | None = None, download: bool | None = None, log=print) -> dict:
    from . import models
    from .data import load

    for name in names:  # an unknown family fails before anything is trained
        models.family_class(name)
    x, y = load(dataset, "train", data_dir, download)
    xt, yt = load(dataset, "test", data_dir, download)
    if limit:
        x, y, xt, yt = x[:limit], y[:limit], xt[:limit], yt[:limit]
    val_size = min(5000, len(x) // 10)
    out = Path(out)
    runs = []
    for name in names:
        for seed in seeds:
            log(f"{name} (seed {seed}): training on {len(x) - val_size} images ...")
            row = run_one(name, seed, ((x, y), (xt, yt)), dataset, out, epochs_scale, val_size)
            log(f"{name} (seed {seed}): test accuracy {row['accuracy']:.2%}, {row['train_seconds']:.1f}s training")
            runs.append(row)
    result = {"dataset": dataset, "train_images": len(x) - val_size, "val_images": val_size, "test_images": len(xt),
              "seeds": list(seeds), "epochs_scale": epochs_scale, "machine": machine(), "runs": runs,
              "summary": summarize(runs)}
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
                     "n_parameters": mine[0]["n_parameters"], "file_bytes": mine[0]["file_bytes"]})
    return rows


def markdown(result: dict) -> str:
    lines = [f"Dataset: {result['dataset']} ({result['train_images']} train, {result['val_images']} validation, "
             f"{result['test_images']} test images), seeds {result['seeds']}, machine: {result['machine']}", "",
             "| model | reference | test accuracy | macro-F1 | training time (s) | prediction (images/s) "
             "| parameters | model file |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]:
        ref = f"{r['reference']:.2f}%" if r["reference"] is not None else "-"
        spread = f" ± {100 * r['accuracy_std']:.2f}" if r["seeds"] > 1 else ""
        lines.append(f"| {r['model']} | {ref} | {100 * r['accuracy']:.2f}%{spread} | {r['macro_f1']:.4f} "
                     f"| {r['train_seconds']:.1f} | {r['images_per_second']:,.0f} | {r['n_parameters']:,} "
                     f"| {r['file_bytes'] / 1e6:.2f} MB |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
