"""What a training run does besides the plain loop, as callbacks of `loop.Learner`.

The Learner calls each callback at fixed points of a batch (`before_batch`, `before_forward`,
`after_forward`, `after_loss`, `after_batch`) and of the run (`on_train_begin`, `on_epoch_end`,
`on_train_end`); a callback reads and may replace what the Learner holds at that point: the batch
(`xb`, `yb`), the logits, the loss, the loss function. `training_callbacks(config, teachers)` are the
ones a TrainConfig asks for, in the order they must run:

    MixedPrecision   bf16 autocast of the forward pass (config.precision == "bf16")
    Augment          random affine transforms of each batch (config.augment)
    OutlierExposure  images labelled NOT_ONE_DIGIT pulled towards equal probabilities (config.not_one_digit)
    Distillation     half the loss matches trained teachers' softened probabilities (config.teachers)

ProgressBar and Checkpoint are the caller's (`digitlab train` adds them).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from digitlab.lab.augment import NOT_ONE_DIGIT  # the label of an image that is not one digit
from digitlab.lab.precision import autocast

if TYPE_CHECKING:
    from digitlab.lab.loop import Learner, TrainConfig

OUTLIER_WEIGHT = 0.5  # its loss weight: outlier exposure's (Hendrycks et al. 2019)
# Knowledge distillation (Hinton et al. 2015): the share of the loss that matches the teachers' softened
# probabilities, and the softening temperature. The paper's usual values, not tuned here.
DISTILL_WEIGHT, DISTILL_TEMPERATURE = 0.5, 2.0


class Callback:
    def on_train_begin(self, learner: Learner) -> None: ...
    def before_batch(self, learner: Learner) -> None: ...
    def before_forward(self, learner: Learner) -> None: ...
    def after_forward(self, learner: Learner) -> None: ...
    def after_loss(self, learner: Learner) -> None: ...
    def on_batch_end(self, learner: Learner) -> None: ...
    def on_epoch_end(self, learner: Learner) -> None: ...
    def on_train_end(self, learner: Learner) -> None: ...


class CancelFit(Exception):  # noqa: N818 (fastai's name: a signal, not an error)
    """Raised by a callback to end `Learner.fit` early (the LR finder, once the loss diverges)."""


# ---------------------------------------------------------------------------- the recipe's callbacks
class MixedPrecision(Callback):
    """The forward pass (network and logits) under bf16 autocast; the loss is computed in float32."""

    def before_forward(self, learner: Learner) -> None:
        self.context = autocast(learner.xb.device, "bf16")
        self.context.__enter__()

    def after_forward(self, learner: Learner) -> None:
        self.context.__exit__(None, None, None)
        learner.logits = learner.logits.float()


def random_affine(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale, shear and shift of a batch, one grid_sample call."""
    n = x.shape[0]
    rnd = (torch.rand(n, 5, generator=generator) * 2 - 1).to(x.device)  # drawn on the CPU: same stream anywhere
    angle = rnd[:, 0] * math.radians(10) * strength
    scale = 1 + rnd[:, 1] * 0.1 * strength
    shear = rnd[:, 2] * 0.15 * strength
    shift = rnd[:, 3:5] * (2 * 2 / 28) * strength  # grid units: 2px of 28
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()  # the normalized value of a black pixel
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background


class Augment(Callback):
    """Random affine transforms of every batch (`strength` 1: rotate 10deg, scale 10%, shift 2px),
    drawn from the epoch's generator so that a resumed run sees the same ones."""

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def before_batch(self, learner: Learner) -> None:
        learner.xb = random_affine(learner.xb, self.strength, learner.generator).contiguous(
            memory_format=learner.layout)


class OutlierExposure(Callback):
    """Images labelled NOT_ONE_DIGIT are pulled towards equal probabilities for all ten labels, so
    that such an image reads with low confidence; the digits keep their cross-entropy."""

    def on_train_begin(self, learner: Learner) -> None:
        smoothing = learner.config.label_smoothing

        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            each = F.cross_entropy(logits, y.clamp(min=0), label_smoothing=smoothing, reduction="none")
            uniform = -F.log_softmax(logits, 1).mean(1)
            return torch.where(y != NOT_ONE_DIGIT, each, OUTLIER_WEIGHT * uniform).mean()

        learner.loss_func = loss


class Distillation(Callback):
    """Knowledge distillation: the loss is half the Learner's and half the match (KL divergence) to
    the teachers' averaged probabilities softened by DISTILL_TEMPERATURE: their doubts (a 7 that
    could be a 1) carry more than the one label."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        self.teachers = teachers  # in eval mode, on the Learner's device

    def after_loss(self, learner: Learner) -> None:
        with torch.no_grad(), autocast(learner.xb.device, learner.config.precision):
            soft = torch.stack([F.softmax(t(learner.xb).float() / DISTILL_TEMPERATURE, 1)
                                for t in self.teachers]).mean(0)
        student = F.log_softmax(learner.logits / DISTILL_TEMPERATURE, 1)
        # x T^2 keeps the soft term's gradients the size of the hard term's whatever the temperature
        matching = F.kl_div(student, soft, reduction="batchmean") * DISTILL_TEMPERATURE ** 2
        learner.loss = (1 - DISTILL_WEIGHT) * learner.loss + DISTILL_WEIGHT * matching


def training_callbacks(config: TrainConfig, teachers: list[nn.Module] = ()) -> list[Callback]:
    """The callbacks `config` asks for (its precision already resolved), in the order they run:
    the batch is augmented, then forwarded (in bf16 or not), the loss replaced, then mixed."""
    callbacks: list[Callback] = []
    if config.precision == "bf16":
        callbacks.append(MixedPrecision())
    if config.augment:
        callbacks.append(Augment(config.augment))
    if config.not_one_digit:
        callbacks.append(OutlierExposure())
    if teachers:
        callbacks.append(Distillation(list(teachers)))
    return callbacks


# ---------------------------------------------------------------------------- the caller's callbacks
class ProgressBar(Callback):
    """Progress on stderr: a live line per epoch (batches, running loss and accuracy; redrawn on a
    terminal, every 10 s in a log), then the epoch's summary line."""

    def __init__(self, stream=None) -> None:
        self.stream = stream  # None: sys.stderr at the time of writing

    def on_batch_end(self, learner: Learner) -> None:
        from digitlab.progress import Progress

        if learner.batch == 1:
            self.bar = Progress(f"epoch {learner.epoch + 1}/{learner.config.epochs}", total=learner.n_batches,
                                stream=self.stream, delay=0.0)
        if learner.batch % 20 == 0 or learner.batch == learner.n_batches:
            self.bar.update(learner.batch, f"loss {learner.running_loss:.4f} acc {learner.running_acc:.4f}")

    def on_epoch_end(self, learner: Learner) -> None:
        stream = self.stream or sys.stderr
        h = learner.history[-1]
        val = f" val_loss {h['val_loss']:.4f} val_acc {h['val_acc']:.4f}" if "val_loss" in h else ""
        line = (f"epoch {learner.epoch + 1}/{learner.config.epochs} loss {h['train_loss']:.4f} "
                f"acc {h['train_acc']:.4f}{val} ({h['time']:.1f}s)")
        stream.write(f"\r{line}\033[K\n" if stream.isatty() else line + "\n")
        stream.flush()


class Checkpoint(Callback):
    """Saves the model (and optimizer state, for --resume) at the end of every epoch."""

    def __init__(self, save) -> None:
        self.save = save  # callable(learner), e.g. lambda learner: save_checkpoint(learner, folder)

    def on_epoch_end(self, learner: Learner) -> None:
        self.save(learner)
