"""Transfer learning: fastai's workflow on any family's layer groups (NeuralClassifier.layer_groups():
early body ... head). Train the head with the body frozen, then unfreeze and train everything, the
early layers at a lower LR than the later ones. A frozen layer gets no gradient and, if it is a batch
norm, keeps its running statistics (a few examples must not rewrite what 60,000 images measured).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from digitlab.lab.callbacks import Callback
from digitlab.lab.loop import Learner, TrainConfig


def freeze_to(groups: list[nn.Module], n: int) -> None:
    """Trainable: groups[n:] only (fastai's freeze_to). n = -1 trains the head, 0 everything."""
    n = n % len(groups) if n < 0 else n
    for i, group in enumerate(groups):
        for p in group.parameters():
            p.requires_grad_(i >= n)


def freeze(groups: list[nn.Module]) -> None:
    """Only the last group (the head) trains."""
    freeze_to(groups, -1)


def unfreeze(groups: list[nn.Module]) -> None:
    freeze_to(groups, 0)


def spread_lrs(lr: float | slice, n: int) -> list[float]:
    """fastai's slice(lo, hi): n learning rates spaced geometrically from lo (first group) to hi (the
    head); a plain number gives every group that LR; slice(hi) gives the head hi, the rest hi / 10."""
    if not isinstance(lr, slice):
        return [float(lr)] * n
    if lr.start is None:
        return [lr.stop / 10] * (n - 1) + [float(lr.stop)]
    if n == 1:
        return [float(lr.stop)]
    return [float(lr.start * (lr.stop / lr.start) ** (i / (n - 1))) for i in range(n)]


def discriminative_groups(groups: list[nn.Module], lr: float | slice) -> list[dict]:
    """Optimizer parameter groups, one per layer group that has trainable parameters, each with its LR."""
    out = []
    for group, group_lr in zip(groups, spread_lrs(lr, len(groups)), strict=True):
        params = [p for p in group.parameters() if p.requires_grad]
        if params:
            out.append({"params": params, "lr": group_lr})
    return out


def fit_one_cycle(net: nn.Module, groups: list[nn.Module], x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                  epochs: int, lr: float | slice, callbacks: list[Callback] | tuple = (), x_val=None,
                  y_val=None, device: str = "cpu") -> Learner:
    """One one-cycle run of the trainable groups, each peaking at its share of `lr`."""
    cfg = replace(config, epochs=epochs, schedule="onecycle", lr=spread_lrs(lr, 1)[-1])  # the head's peak
    learner = Learner(net, cfg, callbacks, device, discriminative_groups(groups, lr))
    learner.fit(x, y, x_val, y_val)
    return learner


def fine_tune(net: nn.Module, groups: list[nn.Module], x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
              epochs: int, freeze_epochs: int = 1, base_lr: float = 2e-3, lr_div: float = 100.0,
              callbacks: list[Callback] | tuple = (), x_val=None, y_val=None, device: str = "cpu") -> list[dict]:
    """fastai's fine_tune: `freeze_epochs` of one-cycle on the head (body frozen) at base_lr, then
    unfreeze and `epochs` of one-cycle on all groups at slice(base_lr / 2 / lr_div, base_lr / 2).
    Returns the history of both phases (each record says its "phase")."""
    history = []
    if freeze_epochs:
        freeze(groups)
        learner = fit_one_cycle(net, groups, x, y, config, freeze_epochs, base_lr, callbacks, x_val, y_val,
                                device)
        history += [{**h, "phase": "frozen"} for h in learner.history]
        net = learner.net
    unfreeze(groups)
    if epochs:
        hi = base_lr / 2
        learner = fit_one_cycle(net, groups, x, y, config, epochs, slice(hi / lr_div, hi), callbacks, x_val, y_val,
                                device)
        history += [{**h, "phase": "unfrozen"} for h in learner.history]
    return history


