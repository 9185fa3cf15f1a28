"""The one training loop for every neural model: in-memory tensors, a one-cycle schedule, callbacks.

The whole dataset lives in one float tensor (60k x 28 x 28 x 4 bytes = 188 MB), so a batch is a
slice, not 128 calls into a per-sample DataLoader. What a recipe adds to the plain loop (bf16,
augmentation, outlier exposure, distillation) is a callback (lab/callbacks.py), and so is what a
caller adds (progress, checkpoints, the LR finder). The pixels a network sees come from `to_tensor`,
the one place that normalizes them.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitlab.lab import distributed
from digitlab.lab.callbacks import Callback, CancelFit, training_callbacks
from digitlab.lab.precision import resolve_precision

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of MNIST's training pixels scaled to [0, 1] (data.normalization)


@dataclass
class TrainConfig:
    """How a network is trained: the recipe, recorded with the model. A family's Config adds its
    architecture (widths, dropout, ...). Where it runs (device) and how many threads it uses are the
    caller's business, not settings of the model: `Learner(device=...)`, `torch.set_num_threads`."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3  # the peak learning rate of the one-cycle schedule
    schedule: str = "onecycle"  # onecycle | constant | step
    step_gamma: float = 0.7  # per-epoch decay for schedule="step"
    optimizer: str = "adam"  # adam | adamw | sgd | adadelta
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    augment: float = 0.0  # random affine strength: 0 = off, 1 = rotate 10deg, scale 10%, shift 2px
    realistic_views: int = 0  # renderings per image as real collections store them (lab/augment.py)
    forms: float = 0.0  # the share of those renderings written on forms: boxes, ruled and squared paper, lines
    not_one_digit: float = 0.0  # images that are not one digit (lab/augment.py), as a share of the digits
    teachers: str = ""  # trained model directories, comma-separated, whose averaged predictions are also learned
    seed: int = 0
    channels_last: bool = True
    precision: str = "auto"  # auto | fp32 | bf16; a trained model's config records the one used (resolve_precision)


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu"):
    """torch's global random state seeded for a block and restored after it: what the block draws
    (initial weights, dropout masks) depends on the seed alone, and the caller's state is untouched."""
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def normalize(images: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], (pixel / 255 - mean) / std: what every network reads."""
    x = np.asarray(images, dtype=np.float32)[:, None] / np.float32(255.0)
    return (x - np.float32(mean)) / np.float32(std)


def to_tensor(images: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> torch.Tensor:
    """`normalize` as a torch tensor."""
    return torch.from_numpy(normalize(images, mean, std))


def train_mode(net: nn.Module) -> nn.Module:
    """net.train(), except batch norms whose parameters are all frozen stay in eval mode (a frozen
    layer keeps the running statistics that 60,000 images measured)."""
    net.train()
    for m in net.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            m.eval()
    return net


class Learner:
    """Owns the training loop: network, optimizer, schedule, the loss function and the history.

    Each epoch gathers the shuffled training set once and slices batches from it; the running loss
    and accuracy stay tensors (no per-batch sync) until a callback reads them. `callbacks` join the
    ones the config asks for (callbacks.training_callbacks: bf16, augmentation, outlier exposure,
    distillation from `teachers`)."""

    def __init__(self, net: nn.Module, config: TrainConfig, callbacks: list[Callback] | tuple = (),
                 device: str = "cpu", param_groups: list[dict] | None = None,
                 teachers: list[nn.Module] | tuple = (), history: list[dict] | None = None) -> None:
        # The precision actually used goes into the config, so the saved model says which it was.
        config = replace(config, precision=resolve_precision(config.precision, device))
        self.net, self.config, self.device = net, config, device
        self.model: nn.Module | None = None  # the network as training calls it: DDP-wrapped under DDP
        self.use(callbacks, teachers)
        # the loss; a callback may replace it (OutlierExposure) or add to it (Distillation, after_loss)
        self.loss_func = lambda logits, y: F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        # param_groups: [{"params": [...], "lr": peak}, ...] for discriminative LRs (transfer.discriminative_groups)
        self.history: list[dict] = history if history is not None else []  # appended to: the caller's list
        self.start_epoch = 0
        self.schedule_start = 0  # the epoch the LR schedule starts at: > 0 once a resumed run is extended
        self.scheduler_state: dict | None = None  # from a checkpoint: restored once fit builds the scheduler
        self.optimizer = make_optimizer(net, config, param_groups)
        self.scheduler = None
        self.train_time = 0.0

    def use(self, callbacks: list[Callback] | tuple = (), teachers: list[nn.Module] | tuple = ()) -> None:
        """The callbacks of the next `fit`: the config's (with distillation from `teachers`), then these."""
        self.callbacks = training_callbacks(self.config, teachers) + list(callbacks)

    @property
    def running_loss(self) -> float:
        return float(self._loss_sum) / max(self._seen, 1)

    @property
    def running_acc(self) -> float:
        return float(self._correct) / max(int(self._digits), 1)

    def fit(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None) -> list[dict]:
        """Trains from `start_epoch` to `config.epochs` (a callback may end it early: CancelFit)."""
        with seeded(self.config.seed, self.device):  # each epoch reseeds; the caller's state is restored
            try:
                self._fit(x, y, x_val, y_val)
            except CancelFit:
                pass
            return self.history

    def _fit(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None,
             y_val: torch.Tensor | None) -> None:
        cfg = self.config
        self.layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.net = self.net.to(self.device).to(memory_format=self.layout)
        # x is [N, 1, 28, 28], or [views, N, 1, 28, 28] holding several renderings of each image,
        # of which every epoch draws one per image.
        x, y = x.to(self.device), y.to(self.device)
        n = len(y)
        # Under DDP (lab/distributed.py) each rank trains on its share of every epoch's permutation, in
        # batches of its share of batch_size: the ranks together take the steps one process would.
        rank, world = distributed.world()
        positions = distributed.shard_positions(n, rank, world)
        per_rank, batch_size = (n, cfg.batch_size) if positions is None else \
            (len(positions), math.ceil(cfg.batch_size / world))
        self.model = distributed.wrap(self.net, self.device)  # what the forward pass calls
        self.n_batches = math.ceil(per_rank / batch_size)
        self._start_schedule()
        self._call("on_train_begin")
        for epoch in range(self.start_epoch, cfg.epochs):
            self.epoch = epoch
            # The permutation depends on (seed, epoch) only, so a resumed run sees the same batches.
            # Dropout and augmentation are reseeded the same way, so resuming reproduces the run exactly.
            epoch_seed = cfg.seed * 1000 + self.epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)).to(self.device)
            self.generator = torch.Generator().manual_seed(epoch_seed + 500 + distributed.RANK_SEED * rank)
            torch.manual_seed(epoch_seed + 700 + distributed.RANK_SEED * rank)
            train_mode(self.net)
            t0 = time.perf_counter()
            view = torch.randint(len(x), (n,), generator=self.generator).to(self.device) if x.ndim == 5 else None
            if positions is not None:
                order = order[positions.to(self.device)]
                view = view[positions.to(self.device)] if view is not None else None
            if view is not None:
                xs = x[view, order].contiguous(memory_format=self.layout)
            else:
                xs = x[order].contiguous(memory_format=self.layout)
            ys = y[order]
            self._loss_sum, self._correct, self._seen, self._digits = 0.0, 0, 0, 0
            for self.batch, start in enumerate(range(0, per_rank, batch_size), 1):
                self.xb, self.yb = xs[start:start + batch_size], ys[start:start + batch_size]
                self._one_batch()
            elapsed = time.perf_counter() - t0
            self.train_time += elapsed
            if world > 1:  # the epoch's figures over every rank's images
                self._loss_sum, self._correct, self._seen, self._digits = distributed.sum_across(
                    self._loss_sum, self._correct, self._seen, self._digits)
            record = {"epoch": self.epoch + 1, "train_loss": self.running_loss, "train_acc": self.running_acc,
                      "lr": self.optimizer.param_groups[0]["lr"], "time": elapsed}
            if x_val is not None and len(x_val) and rank == 0:  # only rank 0 keeps the history
                record["val_loss"], record["val_acc"] = evaluate_loss(self.net, x_val, y_val)
            self.history.append(record)
            self._call("on_epoch_end")
        self._call("on_train_end")

    def _one_batch(self) -> None:
        self._call("before_batch")
        self._call("before_forward")
        self.logits = (self.model or self.net)(self.xb)
        self._call("after_forward")
        self.loss = self.loss_func(self.logits, self.yb)
        self._call("after_loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        yb = self.yb
        self._loss_sum += self.loss.detach() * len(yb)
        self._correct += (self.logits.detach().argmax(1) == yb).sum()
        self._seen += len(yb)
        self._digits += (yb >= 0).sum()  # accuracy counts digits: a negative label marks an image that is none
        self._call("on_batch_end")

    def extend(self, epochs: int) -> str:
        """Changes a resumed run's length to `epochs`; returns what that does to the LR schedule.

        A one-cycle schedule is planned for a fixed length, so the remaining epochs get a new cycle
        of their own (fastai's fit_one_cycle called again); per-epoch schedules just go on."""
        from digitlab.errors import DigitlabError

        if epochs < self.start_epoch:
            raise DigitlabError(f"the checkpoint has {self.start_epoch} epochs done; --epochs {epochs} is fewer")
        if epochs == self.config.epochs:
            return ""
        planned, self.config = self.config.epochs, replace(self.config, epochs=epochs)
        if epochs == self.start_epoch:
            return f"stopping at epoch {epochs} instead of {planned}"
        if self.config.schedule != "onecycle":
            return f"training on to epoch {epochs} (planned: {planned}), the {self.config.schedule} schedule continuing"
        self.schedule_start, self.scheduler_state = self.start_epoch, None
        return (f"training on to epoch {epochs} (planned: {planned}): epochs {self.start_epoch + 1}-{epochs} "
                f"get a one-cycle schedule of their own")

    def _start_schedule(self) -> None:
        """Builds the LR schedule for this run; on resume, puts it back where the checkpoint left it."""
        steps = (self.config.epochs - self.schedule_start) * self.n_batches
        self.scheduler = make_scheduler(self.optimizer, self.config, self.n_batches, steps)
        done = (self.start_epoch - self.schedule_start) * self.n_batches
        # Building the scheduler set the optimizer's LR and momentum to the schedule's start; the
        # schedule is a function of the step count, so replaying the steps puts both back exactly.
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" is intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(done):
                self.scheduler.step()
        saved = self.scheduler_state
        if saved is not None and self.scheduler.state_dict()["last_epoch"] != saved.get("last_epoch"):
            from digitlab.errors import ModelError

            raise ModelError(f"the checkpoint's LR schedule stopped at step {saved.get('last_epoch')}, "
                             f"this run would resume at step {done}: different training data?")

    def _call(self, event: str) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self)


def make_optimizer(net: nn.Module, cfg: TrainConfig, param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    params = param_groups if param_groups is not None else net.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                   total_steps: int | None = None):
    """The per-batch LR schedule; a one-cycle schedule spans `total_steps` (default: the whole run)."""
    if cfg.schedule == "onecycle":
        total = total_steps or cfg.epochs * steps_per_epoch
        if total < 2:  # one step has no cycle; OneCycleLR would divide by zero
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        # each parameter group peaks at its own LR (discriminative fine-tuning); one group peaks at cfg.lr
        peaks = [g["lr"] for g in optimizer.param_groups] if len(optimizer.param_groups) > 1 else cfg.lr
        # The warm-up must end strictly inside the run (OneCycleLR divides by its length): a
        # quarter of it, or 1.5 steps when the run is a handful of batches (--limit smoke runs).
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total,
                                                   pct_start=max(0.25, 1.5 / total))
    if cfg.schedule == "step":  # decays once per epoch, stepped per batch
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cfg.step_gamma ** (step // steps_per_epoch))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


@torch.no_grad()
def predict_logits(net: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits on the CPU, computed wherever the network lives."""
    net.eval()
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        out.append(net(xb).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


def evaluate_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits, y = predict_logits(net, x), y.cpu()
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


