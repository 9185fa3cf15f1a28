"""One self-contained HTML report for one or more trained models (images inline as base64 PNG).

Per model: loss and accuracy curves (train vs validation), the overfitting verdict, the confusion
matrix as a heatmap, the top-loss images, the most-confused pairs and the per-class metrics. With
several models, a comparison table first.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from digitlab.files import atomic_write_text

from .evaluate import Interpretation, ModelResult, evaluate_directory, loss_text, no_true_vote_text, overfitting


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def curves_png(history: list[dict]) -> str | None:
    rows = [h for h in history if "epoch" in h and "train_loss" in h]
    if not rows:
        return None
    epochs = [h["epoch"] for h in rows]
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(10, 3.5))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(h["epoch"], h[f"{split}_{key}"]) for h in rows if f"{split}_{key}" in h]
            if points:
                ax.plot(*zip(*points, strict=True), style, markersize=3,
                        label="training" if split == "train" else "validation")
        ax.set(xlabel="epoch", title=title, xticks=epochs if len(epochs) <= 20 else None)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _figure_png(fig)


def confusion_png(interp: Interpretation) -> str:
    cm = np.array(interp.confusion_matrix)
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    for (t, p), v in np.ndenumerate(cm):
        ax.text(p, t, str(v), ha="center", va="center", fontsize=7, color="white" if v > cm.max() / 2 else "black")
    ticks = range(len(cm))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(interp.classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(interp.classes, fontsize=8)
    return _figure_png(fig)


def top_losses_png(interp: Interpretation, images: np.ndarray, columns: int = 8) -> str | None:
    if not interp.top_losses:
        return None
    n = len(interp.top_losses)
    rows = -(-n // columns)
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(1.6 * columns, 1.9 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    names = interp.classes
    for ax, t in zip(axes.flat, interp.top_losses, strict=False):
        ax.imshow(images[t["index"]], cmap="gray_r")
        ax.set_title(f"#{t['index']} {names[t['true']]}->{names[t['predicted']]}\n"
                     f"p={t['probability']:.2f} p(true)={t['true_probability']:.2f} loss={loss_text(t)}", fontsize=7)
    return _figure_png(fig)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def model_section(r: ModelResult, anchor: str) -> str:
    i, names = r.interp, r.interp.classes
    verdict = overfitting(r.history)
    curves = curves_png(r.history)
    grid = top_losses_png(i, r.images)
    parts = [
        f'<section id="{anchor}"><h2>{html.escape(r.family)}: {html.escape(str(r.directory))}</h2>',
        f"<p>{html.escape(r.dataset)} test set: accuracy <b>{i.accuracy:.2%}</b>, macro-F1 {i.macro_f1:.4f}, "
        f"{i.n_incorrect} of {i.n} incorrect; {r.speed['images_per_second']:,.0f} images/s; "
        f"{r.n_parameters:,} parameters</p>",
        '<h3 class="curves">Loss and accuracy curves</h3>',
        curves or "<p>No per-epoch history (a one-shot model).</p>",
        f'<h3 class="overfitting">Overfitting</h3><p>{html.escape(verdict["verdict"])}</p>',
        '<h3 class="confusion">Confusion matrix</h3>', confusion_png(i),
        '<h3 class="top-losses">Top losses</h3>', grid or "<p>None.</p>",
        f"<p>{html.escape(no_true_vote_text(i))}.</p>" if i.no_true_vote > len(i.top_losses) else "",
        '<h3 class="most-confused">Most confused</h3>',
        _table(["true", "predicted", "count"],
               [[names[c["true"]], names[c["predicted"]], c["count"]] for c in i.most_confused]),
        '<h3 class="per-class">Per-class metrics</h3>',
        _table(["class", "precision", "recall", "F1", "support"],
               [[p["class"], f"{p['precision']:.4f}", f"{p['recall']:.4f}", f"{p['f1']:.4f}", p["support"]]
                for p in i.per_class]),
        "</section>",
    ]
    return "\n".join(parts)


def comparison_table(results: list[ModelResult]) -> str:
    rows = [[r.family, str(r.directory), r.dataset, f"{r.interp.accuracy:.2%}", f"{r.interp.macro_f1:.4f}",
             r.interp.n_incorrect, f"{r.speed['images_per_second']:,.0f}", f"{r.n_parameters:,}"] for r in results]
    return ('<section id="comparison"><h2>Comparison</h2>'
            + _table(["model", "directory", "dataset", "accuracy", "macro-F1", "incorrect", "images/s", "parameters"],
                     rows) + "</section>")


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f0f0f0}section{border-top:2px solid #888;margin-top:2em}img{max-width:100%}"""


def render(results: list[ModelResult]) -> str:
    sections = [comparison_table(results)] if len(results) > 1 else []
    sections += [model_section(r, f"model-{n}") for n, r in enumerate(results)]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>digitlab report</title>"
            f"<style>{STYLE}</style></head><body><h1>digitlab report</h1>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write_report(directories: list[str | os.PathLike], out: str | os.PathLike, dataset: str | None = None,
                 data_dir: str | None = None) -> Path:
    results = [evaluate_directory(d, dataset, data_dir) for d in directories]
    return atomic_write_text(out, render(results))
