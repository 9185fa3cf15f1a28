"""One training loop for every neural model: in-memory tensors, one-cycle, callbacks for the extras.

The whole dataset lives in one float tensor (60k x 28 x 28 x 4 bytes = 188 MB), so a batch is a
slice, not 128 calls into a per-sample DataLoader. Augmentation is done per batch with one
`affine_grid`/`grid_sample` call. Callbacks get the Learner and read what they need from it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitlab.lab import distributed
from digitlab.lab.augment import NOT_ONE_DIGIT  # the label of an image that is not one digit

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
OUTLIER_WEIGHT = 0.5  # its loss weight: outlier exposure's (Hendrycks et al. 2019)
# Knowledge distillation (Hinton et al. 2015): the share of the loss that matches the teachers' softened
# probabilities, and the softening temperature. The paper's usual values, not tuned here.
DISTILL_WEIGHT, DISTILL_TEMPERATURE = 0.5, 2.0


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


def to_tensor(images: np.ndarray, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalized float32 [N, 1, 28, 28]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)
    return x.sub_(mean).div_(std)


def training_loss(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                  soft: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy on digits. When the run trains on images that are not one digit (labelled
    NOT_ONE_DIGIT), those are pulled towards equal probabilities for all ten labels (outlier
    exposure), so that such an image reads with low confidence. With the teachers' softened
    probabilities (`soft`, from `soft_targets`), the loss is half that and half matching them: the teachers' doubts
    (a 7 that could be a 1) carry more than the one label (knowledge distillation)."""
    if not cfg.not_one_digit:
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    else:
        each = F.cross_entropy(logits, y.clamp(min=0), label_smoothing=cfg.label_smoothing, reduction="none")
        uniform = -F.log_softmax(logits, 1).mean(1)
        loss = torch.where(y != NOT_ONE_DIGIT, each, OUTLIER_WEIGHT * uniform).mean()
    if soft is None:
        return loss
    student = F.log_softmax(logits / DISTILL_TEMPERATURE, 1)
    # x T^2 keeps the soft term's gradients the size of the hard term's whatever the temperature
    matching = F.kl_div(student, soft, reduction="batchmean") * DISTILL_TEMPERATURE ** 2
    return (1 - DISTILL_WEIGHT) * loss + DISTILL_WEIGHT * matching


def soft_targets(teachers: list[nn.Module], x: torch.Tensor, precision: str) -> torch.Tensor:
    """The teachers' probabilities for a batch, softened by DISTILL_TEMPERATURE and averaged."""
    with torch.no_grad(), autocast(x.device, precision):
        return torch.stack([F.softmax(t(x).float() / DISTILL_TEMPERATURE, 1) for t in teachers]).mean(0)


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


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively, so that bf16 autocast is faster than float32.

    On a CPU without AVX-512 BF16 or AMX, oneDNN emulates bf16 and training runs 6-10x slower than
    float32 (benchmarks/neural_speed.py on an AVX2 EPYC). Asks both the hardware (cpuinfo, as torch
    reads it) and what torch may use here: ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 turn it off."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    if torch.device(device).type != "cpu" or torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False  # ATen limited to AVX2 (or not x86): its bf16 kernels are emulated
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return hardware and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' -> 'bf16' where the device computes it natively, else 'fp32'; 'fp32'/'bf16' as asked."""
    if precision not in PRECISIONS:
        from digitlab.errors import DigitlabError

        raise DigitlabError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the forward pass when `precision` is 'bf16'; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Callback:
    def on_train_begin(self, learner: Learner) -> None: ...
    def on_batch_end(self, learner: Learner) -> None: ...
    def on_epoch_end(self, learner: Learner) -> None: ...
    def on_train_end(self, learner: Learner) -> None: ...


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


class Learner:
    """Owns the training loop: model, optimizer, schedule, history.

    Each epoch gathers the shuffled training set once and slices batches from it; the running loss
    and accuracy stay tensors (no per-batch sync) until a callback reads them."""

    def __init__(self, net: nn.Module, config: TrainConfig, callbacks: list[Callback] | tuple = (),
                 device: str = "cpu", param_groups: list[dict] | None = None) -> None:
        # The precision actually used goes into the config, so the saved model says which it was.
        config = replace(config, precision=resolve_precision(config.precision, device))
        self.net, self.config, self.callbacks, self.device = net, config, list(callbacks), device
        self.teachers: list[nn.Module] = []  # trained networks whose predictions are also learned (eval mode)
        # param_groups: [{"params": [...], "lr": peak}, ...] for discriminative LRs (see `discriminative_groups`)
        self.history: list[dict] = []
        self.start_epoch = 0
        self.schedule_start = 0  # the epoch the LR schedule starts at: > 0 once a resumed run is extended
        self.scheduler_state: dict | None = None  # from a checkpoint: restored once fit builds the scheduler
        self.optimizer = make_optimizer(net, config, param_groups)
        self.scheduler = None
        self.train_time = 0.0

    @property
    def running_loss(self) -> float:
        return float(self._loss_sum) / max(self._seen, 1)

    @property
    def running_acc(self) -> float:
        return float(self._correct) / max(int(self._digits), 1)

    def fit(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None) -> list[dict]:
        with seeded(self.config.seed, self.device):  # each epoch reseeds; the caller's state is restored
            return self._fit(x, y, x_val, y_val)

    def _fit(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None,
             y_val: torch.Tensor | None) -> list[dict]:
        cfg = self.config
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.net = self.net.to(self.device).to(memory_format=layout)
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
        model = distributed.wrap(self.net, self.device)
        self.n_batches = math.ceil(per_rank / batch_size)
        self._start_schedule()
        self._call("on_train_begin")
        for epoch in range(self.start_epoch, cfg.epochs):
            self.epoch = epoch
            # The permutation depends on (seed, epoch) only, so a resumed run sees the same batches.
            # Dropout and augmentation are reseeded the same way, so resuming reproduces the run exactly.
            epoch_seed = cfg.seed * 1000 + self.epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed)).to(self.device)
            generator = torch.Generator().manual_seed(epoch_seed + 500 + distributed.RANK_SEED * rank)
            torch.manual_seed(epoch_seed + 700 + distributed.RANK_SEED * rank)
            train_mode(self.net)
            t0 = time.perf_counter()
            view = torch.randint(len(x), (n,), generator=generator).to(self.device) if x.ndim == 5 else None
            if positions is not None:
                order = order[positions.to(self.device)]
                view = view[positions.to(self.device)] if view is not None else None
            if view is not None:
                xs = x[view, order].contiguous(memory_format=layout)
            else:
                xs = x[order].contiguous(memory_format=layout)
            ys = y[order]
            self._loss_sum, self._correct, self._seen, self._digits = 0.0, 0, 0, 0
            for self.batch, start in enumerate(range(0, per_rank, batch_size), 1):
                xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
                if cfg.augment:
                    xb = random_affine(xb, cfg.augment, generator).contiguous(memory_format=layout)
                soft = soft_targets(self.teachers, xb, cfg.precision) if self.teachers else None
                with autocast(x.device, cfg.precision):
                    logits = model(xb).float()
                loss = training_loss(logits, yb, cfg, soft)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self._loss_sum += loss.detach() * len(yb)
                self._correct += (logits.detach().argmax(1) == yb).sum()
                self._seen += len(yb)
                self._digits += (yb != NOT_ONE_DIGIT).sum()
                self._call("on_batch_end")
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
        return self.history

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


def lr_find(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, start_lr: float = 1e-6,
            end_lr: float = 1.0, steps: int = 100, device: str = "cpu", progress: bool = True,
            lr_mults: list[float] | None = None, param_groups: list[dict] | None = None) -> dict:
    """Leslie Smith's range test: raise the LR exponentially each batch, record the smoothed loss.

    Suggests a third of the LR at the minimum loss as the peak of a one-cycle schedule (Smith 2018:
    the peak sits just below where the loss stops falling; the schedule spends little time there).
    The classic rules for a constant LR -- a tenth of that, or the steepest descent -- are reported
    too; on ResNet-34 they give 1e-3 and 2.3e-4, which leave one-cycle 0.1-0.4 point short in 5 epochs.

    It works on a frozen network (frozen layers get no gradient and keep their BN statistics) and
    with discriminative `param_groups`: group i then runs at lr * lr_mults[i], the LR swept being
    the head's (the last group's, multiplier 1).
    """
    with seeded(config.seed, device):
        return _lr_find(net, x, y, config, start_lr, end_lr, steps, device, progress, lr_mults, param_groups)


def _lr_find(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, start_lr: float,
             end_lr: float, steps: int, device: str, progress: bool, lr_mults: list[float] | None = None,
             param_groups: list[dict] | None = None) -> dict:
    from digitlab.progress import Progress

    net = net.to(device)
    precision = resolve_precision(config.precision, device)
    optimizer = make_optimizer(net, replace(config, lr=start_lr), param_groups)
    lr_mults = lr_mults or [1.0] * len(optimizer.param_groups)
    bar = Progress("LR finder", total=steps, enabled=progress)
    gamma = (end_lr / start_lr) ** (1 / (steps - 1))
    generator = torch.Generator().manual_seed(config.seed)
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    train_mode(net)
    for i in range(steps):
        lr = start_lr * gamma**i
        for group, mult in zip(optimizer.param_groups, lr_mults, strict=True):
            group["lr"] = lr * mult
        idx = torch.randint(0, len(x), (config.batch_size,), generator=generator)
        xb = x[idx].to(device).contiguous(memory_format=torch.channels_last)
        with autocast(xb.device, precision):
            logits = net(xb).float()
        loss = F.cross_entropy(logits, y[idx].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smooth = 0.9 * smooth + 0.1 * loss.item()
        value = smooth / (1 - 0.9 ** (i + 1))
        if not math.isfinite(value) or (i > 10 and value > 4 * best):
            break
        best = min(best, value)
        lrs.append(lr)
        losses.append(value)
        bar.update(i + 1, f"lr {lr:.1e} loss {value:.4f}")
    bar.close(f"stopped at lr {lr:.1e}: the loss diverged" if len(lrs) < steps else "")
    log_lrs, arr = np.log10(lrs), np.array(losses)
    slopes = np.gradient(arr, log_lrs) if len(arr) > 2 else np.zeros(1)
    steepest = lrs[int(np.argmin(slopes))]
    at_min = lrs[int(np.argmin(arr))]
    return {"lrs": lrs, "losses": losses, "suggestion": float(at_min / 3),
            "steepest": float(steepest), "min_loss_lr": float(at_min)}


# ---------------------------------------------------------------------------- transfer learning
# fastai's workflow on any family's layer groups (NeuralClassifier.layer_groups(): early body ...
# head): train the head with the body frozen, then unfreeze and train everything, the early layers
# at a lower LR than the later ones. A frozen layer gets no gradient and, if it is a batch norm,
# keeps its running statistics (a few examples must not rewrite what 60,000 images measured).


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


def train_mode(net: nn.Module) -> nn.Module:
    """net.train(), except batch norms whose parameters are all frozen stay in eval mode."""
    net.train()
    for m in net.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            m.eval()
    return net


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


def save_lr_plot(result: dict, path: str | Path) -> Path:
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    from digitlab.files import atomic_write_bytes

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result["lrs"], result["losses"])
    ax.axvline(result["suggestion"], color="red", linestyle="--", label=f"suggested {result['suggestion']:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="LR finder")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------- checkpoints
# A checkpoint is a folder: weights-<epoch>.safetensors, optimizer-<epoch>.safetensors (the optimizer's
# tensors), rng-<epoch>.safetensors (the random generators' states) and checkpoint.json (epoch,
# history, config, the optimizer's and scheduler's other state). checkpoint.json is written last and
# names the files of its epoch, so a crash mid-save leaves the previous checkpoint valid. No pickles.
CHECKPOINT_JSON = "checkpoint.json"


def save_checkpoint(learner: Learner, directory: str | Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save

    from digitlab.files import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    epoch = learner.epoch + 1
    weights = {k: v.detach().cpu().contiguous() for k, v in learner.net.state_dict().items()}
    tensors, state = _flatten_optimizer(learner.optimizer.state_dict())
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    names = {"weights": f"weights-{epoch}.safetensors", "optimizer": f"optimizer-{epoch}.safetensors",
             "rng": f"rng-{epoch}.safetensors"}
    atomic_write_bytes(directory / names["weights"], save(weights))
    atomic_write_bytes(directory / names["optimizer"], save(tensors))
    atomic_write_bytes(directory / names["rng"], save(rng))
    scheduler = learner.scheduler.state_dict() if learner.scheduler is not None else None
    atomic_write_json(directory / CHECKPOINT_JSON, {
        "epoch": epoch, **names, "config": asdict(learner.config), "history": learner.history,
        "train_time": learner.train_time, "optimizer_state": state,
        "schedule_start": learner.schedule_start, "scheduler_state": _jsonable(scheduler), **(extra or {})})
    for old in directory.glob("*.safetensors"):
        if old.name not in names.values():
            old.unlink(missing_ok=True)
    return directory


def read_checkpoint(directory: str | Path) -> dict:
    """The checkpoint's JSON; raises ModelError when there is none or it is damaged."""
    from digitlab.errors import ModelError
    from digitlab.files import read_json

    path = Path(directory) / CHECKPOINT_JSON
    if not path.is_file():
        raise ModelError(f"{directory}: no checkpoint to resume from ({CHECKPOINT_JSON} missing)")
    try:
        meta = read_json(path)
        meta["epoch"], meta["weights"], meta["optimizer"], meta["config"], meta["history"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: damaged checkpoint") from None
    return meta


def load_checkpoint(learner: Learner, directory: str | Path) -> dict:
    """Restores weights, optimizer, scheduler and random states, history and time; `fit` then
    starts at the next epoch."""
    from safetensors.torch import load_file

    from digitlab.errors import ModelError

    directory = Path(directory)
    meta = read_checkpoint(directory)
    try:
        learner.net.load_state_dict(load_file(directory / meta["weights"]))
        learner.optimizer.load_state_dict(
            _unflatten_optimizer(load_file(directory / meta["optimizer"]), meta["optimizer_state"]))
        rng = load_file(directory / meta["rng"]) if "rng" in meta else {}
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise ModelError(f"{directory}: checkpoint does not fit this model ({e})") from None
    # The loop reseeds from (seed, epoch) at each epoch, so these matter only for draws made
    # outside it (callbacks, evaluation): they continue the stream the killed run was on.
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    learner.start_epoch = int(meta["epoch"])
    learner.schedule_start = int(meta.get("schedule_start", 0))
    learner.scheduler_state = meta.get("scheduler_state")
    learner.history = list(meta["history"])
    learner.train_time = float(meta.get("train_time", 0.0))
    return meta


def _jsonable(value):
    """A scheduler's state_dict as JSON: its lambdas (LambdaLR) are code, rebuilt from the config."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return None


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits an optimizer state_dict into tensors (for safetensors) and JSON-able values."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], state: dict) -> dict:
    per_param: dict[int, dict] = {}
    for key, value in [*tensors.items(), *state["scalars"].items()]:
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    return {"state": per_param, "param_groups": state["param_groups"]}
