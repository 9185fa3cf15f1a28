"""Probabilities that mean what they say: softmax with a temperature, its fit, and how to measure it.

A network's softmax is usually overconfident. Dividing its logits by one temperature T, fitted to
minimize the negative log-likelihood of held-out labels (Guo et al. 2017), fixes most of that; the
model card records T (`digitlab.card.update(path, temperature=T)`) and `infer.OnnxModel` applies it.
"""

from __future__ import annotations

import math

import numpy as np

FLOOR = 1e-30  # probabilities are clipped here before a log: a zero would give an infinite loss


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) along the last axis, computed in the logits' dtype, float32 out."""
    z = logits / logits.dtype.type(temperature)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the same as dividing the logits by T (log p differs from them by a constant)."""
    if temperature == 1.0:
        return np.asarray(probs, np.float32)
    return softmax(np.log(np.clip(np.asarray(probs, np.float64), FLOOR, 1.0)), temperature)


def log_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log p(true label) per example."""
    labels = np.asarray(labels)
    return -np.log(np.clip(np.asarray(probs, np.float64)[np.arange(len(labels)), labels], FLOOR, 1.0))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (cross-entropy)."""
    return float(log_losses(probs, labels).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimizing the negative log-likelihood of held-out labels, found by golden-section
    search on log T (the NLL is unimodal in T)."""
    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(apply_temperature(probs, math.exp(a)), labels) < nll(apply_temperature(probs, math.exp(b)), labels):
            hi = b
        else:
            lo = a
    return round(math.exp((lo + hi) / 2), 4)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)
