"""Teach a trained model someone's handwriting from a few labelled examples, without forgetting MNIST.

    digitlab finetune bundled --images my-digits/ --out runs/my-model

`my-digits/0/*.png ... my-digits/9/*.png` (or the corrections the service stored) are read through
the reader's preprocessing, so the model sees what `digitlab predict` will show it. The default
method, `style`, trains on views of them that keep the writer's style (small rotations, scalings,
shifts and elastic bends; no shear or pen changes) while the base model's own answers on rehearsed
MNIST images are kept (distillation: learning without forgetting). `fastai`, `all` and `head` mix
the examples with the rehearsal and train on labels only (fastai: the head with the body frozen,
then everything with lower LRs for the early layers). The result is a lab model directory with a
card (base, data, command, before/after figures) and an ONNX export made like the bundled model's.

The bundled model ships as ONNX only, with its batch norms folded into the convolutions.
`load_base("bundled")` rebuilds the torch network from it: the convolution weights as they are, and
each folded batch norm unfolded again with statistics measured on MNIST training images, which
leaves the network's function unchanged (eval mode) while training mode sees real statistics.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from digitlab import card as model_card
from digitlab import data
from digitlab.errors import DataError, ImageError, ModelError
from digitlab.files import atomic_write_json, read_json

from . import models
from .augment import NOT_ONE_DIGIT
from .models.base import config_from
from .models.neural import NeuralClassifier


@dataclasses.dataclass
class FinetuneConfig:
    """How `digitlab finetune` teaches a model a hand. The style method's defaults were chosen on the
    development split of `benchmarks/finetune.py` (simulated writers writing MNIST *training* digits
    the base never trained on; never the test set): BENCHMARKS.md, "Learning a hand"."""

    method: str = "style"  # style (default) | fastai | all | head: see adapt()
    # --- style: steps on the user's views, the base's own answers kept on rehearsed MNIST images
    steps: int = 0  # optimizer steps; 0: STEPS (300)
    batch_size: int = 32  # the user's views per step
    rehearsal_batch: int = 128  # rehearsed MNIST images per step, beside them (64: 2x the MNIST loss)
    distill: float = 4.0  # weight of matching the base's softened answers on the rehearsed images (LwF;
    # 1 forgot 0.4 point of MNIST on the development writers, 4 with 128 rehearsed images 0.03)
    l2sp: float = 0.0  # weight of the pull toward the base's weights (L2-SP); 0.1 changed nothing measurable
    freeze_share: float = 0.0  # share of the steps in which only the head trains (0.2: no better)
    batchnorm: str = "frozen"  # frozen: keep the base's batch-norm statistics | train: re-estimate them
    label_smoothing: float = 0.1  # on the user's examples (the bundled model trained with 0.1)
    keep_share: float = 0.0  # after training, move the weights this share of the way back to the base's
    # (weight-space ensembling, WiSE-FT, Wortsman et al. 2022); 0.2 forgot less and learnt less
    rotate: float = 8.0  # degrees, at most, either way: the style-keeping views (style_views)
    scale: float = 0.08  # at most +-8 %
    shift: float = 1.5  # pixels of 28, at most, each way
    elastic: float = 1.0  # pixels of 28: the typical size of the smooth random displacement
    # --- shared
    lr: float = 0.0  # the head's peak LR; 0: the method's (style 3e-3, near the base's own 4e-3; the others 1e-3)
    lr_div: float = 0.0  # the first group's LR = the head's / lr_div; 0: the method's (style 10, fastai 100)
    rehearsal: int = 3000  # MNIST training images mixed in
    # --- fastai | all | head: epochs over the user's images (repeated) mixed with the rehearsal, labels only
    epochs: int = 2  # all layers, after the head-only epoch
    freeze_epochs: int = 1  # head only, body frozen
    repeats: int = 0  # copies of each user image per epoch; 0: enough for a third of the epoch
    min_per_class: int = 1
    seed: int = 0

    def learning_rates(self) -> tuple[float, float]:
        """(the head's peak LR, lr_div), the method's defaults where 0."""
        style = self.method == "style"
        return self.lr or (3e-3 if style else 1e-3), self.lr_div or (10.0 if style else 100.0)


METHODS = ("style", "fastai", "all", "head")


# ---------------------------------------------------------------------------- the base model
def load_base(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> NeuralClassifier:
    """A lab model directory, an exported .onnx file of a plain Sequential family, or "bundled"."""
    path = models.resolve(spec)
    if path.is_dir():
        model = models.load(path)
        if not isinstance(model, NeuralClassifier):
            raise ModelError(f"{path}: a {model.family} model cannot be fine-tuned; use a neural one "
                             "(mlp, cnn, fast, best, resnet34)")
        return model
    if path.suffix == ".onnx" and path.is_file():
        return from_onnx(path, data_dir)
    raise ModelError(f"{spec}: not a model directory, an .onnx file or 'bundled'")


def from_onnx(path: Path, data_dir: str | os.PathLike | None = None, stats_images: int = 2000) -> NeuralClassifier:
    """The torch model behind an ONNX file exported by `digitlab export` (batch norms folded)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from .loop import to_tensor

    card = model_card.read(path)
    family = card.get("family")
    cls = models.family_class(family) if family in models.FAMILIES else None
    if cls is None or not issubclass(cls, NeuralClassifier):
        raise ModelError(f"{path}: its card names family {family!r}, not a neural family")
    # JSON gives lists back; the configs' sequences (widths) are tuples
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in card.get("config", {}).items()}
    model = cls(config_from(cls.Config, settings))
    net = model.net
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in onnx.load(str(path)).graph.initializer}
    if not isinstance(net, nn.Sequential) or any("weight_bias" not in k and k.count(".") != 1 for k in weights
                                                  if k.endswith(("weight", "bias"))):
        raise ModelError(f"{path}: only plain Sequential networks (mlp, cnn, fast, best) can be rebuilt from ONNX")
    unfold: list[tuple[nn.Conv2d, nn.BatchNorm2d, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for index, layer in enumerate(net):
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight.copy_(weights[f"{index}.weight"])
                    after = net[index + 1] if index + 1 < len(net) else None
                    if isinstance(after, nn.BatchNorm2d):  # folded: conv(x) + weight_bias
                        unfold.append((layer, after, weights[f"{index}.weight_bias"]))
                    elif layer.bias is not None:
                        layer.bias.copy_(weights[f"{index}.bias"])
    except (KeyError, RuntimeError) as e:
        raise ModelError(f"{path}: its weights do not fit the {family} architecture ({e})") from None
    if unfold:
        images, _ = data.load("mnist", "train", data_dir)
        pick = np.random.default_rng(0).choice(len(images), stats_images, replace=False)
        _unfold_batchnorm(net, unfold, to_tensor(images[pick]))
    net.eval()
    return model


def _unfold_batchnorm(net, unfold: list, x) -> None:
    """Gives each folded batch norm the statistics (mean m, variance v) of its convolution's output z
    and the affine part that undoes them: (z - m) / sqrt(v + eps) * sqrt(v + eps) + (b + m) = z + b,
    the folded function exactly; in training mode the batch statistics are then close to m and v."""
    import torch

    stats = {}
    hooks = [conv.register_forward_hook(lambda mod, inp, out: stats.__setitem__(mod, out.detach()))
             for conv, _, _ in unfold]
    for _, bn, bias in unfold:  # identity-like first, so that each layer sees its exact input
        with torch.no_grad():
            bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps), bn.weight.fill_(1.0), bn.bias.copy_(bias)
    net.eval()
    with torch.no_grad():
        net(x)
        for conv, bn, bias in unfold:
            z = stats[conv].float()
            mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
            bn.running_mean.copy_(mean), bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps)), bn.bias.copy_(bias + mean)
    for hook in hooks:
        hook.remove()


# ---------------------------------------------------------------------------- the user's images
def read_examples(root: str | os.PathLike, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, 28, 28], labels [N] and file names from `root/<digit>/*`, each image through
    the reader's preprocessing. Raises DataError naming what is wrong with the folder."""
    from digitlab.reader.pipeline import preprocess

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected {root}/0/ ... {root}/9/ holding images)")
    files = data.image_files(root)
    digits = data.get("mnist").classes
    folders = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "." for p in files]
    stray = sorted({f"{folder}/" if folder != "." else "the top folder" for folder in folders if folder not in digits})
    if stray:
        raise DataError(f"{root}: images outside the class folders 0-9, in {', '.join(stray[:5])}")
    if not files:
        raise DataError(f"{root}: no images found in class folders 0/ .. 9/")
    check_counts({d: folders.count(d) for d in digits}, str(root), min_per_class)
    images, labels, names, bad = [], [], [], []
    for path in files:
        try:
            images.append(preprocess(path))
        except ImageError as e:
            reason = str(e).removeprefix(f"{path}: ")
            bad.append(f"{path.relative_to(root)} ({reason})")
            continue
        labels.append(int(path.relative_to(root).parts[0]))
        names.append(str(path.relative_to(root)))
    if bad:
        raise DataError(f"{root}: {len(bad)} unreadable image{'s' if len(bad) > 1 else ''}: {'; '.join(bad[:3])}"
                        + (" ..." if len(bad) > 3 else ""))
    return np.stack(images), np.array(labels, dtype=np.int64), names


def check_counts(counts: dict[str, int], where: str, min_per_class: int) -> None:
    """Raises DataError unless every digit 0-9 has at least `min_per_class` examples (0: any digits)."""
    missing = [d for d, n in counts.items() if n == 0]
    if missing and min_per_class > 0:
        raise DataError(f"{where}: no examples of digit{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(each of 0-9 needs at least {min_per_class}; --min-per-class 0 takes any)")
    few = [f"{d} ({n})" for d, n in counts.items() if n < min_per_class]
    if few:
        raise DataError(f"{where}: too few examples: need at least {min_per_class} of each digit; "
                        f"have {', '.join(few)}")


def read_corrections(db_path: str | os.PathLike, user: str | None = None,
                     min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, 28, 28], labels [N] and names ("correction 12") of the corrections a service
    stored (`serve.feedback`), all of them or one user's: the 28x28 digit the reader made of each (an
    older row without one: its stored image, through the reader's preprocessing); those kept apart (not
    a digit) left out. Raises DataError naming what is missing."""
    import io

    from PIL import Image

    from digitlab.reader.pipeline import preprocess
    from digitlab.serve import feedback

    where = f"{db_path}" + (f" (user {user!r})" if user is not None else "")
    if not Path(db_path).is_file():
        raise DataError(f"{db_path}: no feedback database (corrections are stored by `digitlab serve`)")
    db = feedback.connect(db_path)
    try:
        rows = list(feedback.examples(db, user))
        if not rows:
            users = feedback.users(db)
            known = f"; users there: {', '.join(users[:10])}" if users and user is not None else ""
            raise DataError(f"{where}: no corrections to learn from{known}")
    finally:
        db.close()
    images, labels, names = [], [], []
    for row_id, label, digit, image in rows:
        try:
            if digit is not None:
                with Image.open(io.BytesIO(digit)) as im:
                    images.append(np.asarray(im.convert("L")))
            else:
                images.append(preprocess(image))
        except (OSError, ImageError) as e:
            raise DataError(f"{db_path}: correction {row_id} is not a readable image ({e})") from None
        labels.append(label)
        names.append(f"correction {row_id}")
    labels = np.array(labels, dtype=np.int64)
    check_counts({str(d): int((labels == d).sum()) for d in range(10)}, where, min_per_class)
    return np.stack(images), labels, names


# ---------------------------------------------------------------------------- fine-tuning
def mix_rehearsal(x: np.ndarray, y: np.ndarray, x_old: np.ndarray, y_old: np.ndarray, repeats: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's images, each `repeats` times (0: enough to be a third of the mix), with the old data."""
    repeats = repeats or max(1, round(len(x_old) / (2 * len(x))))
    xs, ys = np.concatenate([np.tile(x, (repeats, 1, 1)), x_old]), np.concatenate([np.tile(y, repeats), y_old])
    order = np.random.default_rng(seed).permutation(len(xs))
    return xs[order], ys[order]


def adapt(model: NeuralClassifier, x: np.ndarray, y: np.ndarray, x_old: np.ndarray, y_old: np.ndarray,
          config: FinetuneConfig) -> NeuralClassifier:
    """Fine-tunes `model` in place on the user's (x, y), keeping MNIST with the rehearsal sample (x_old, y_old).

    style (default): `learn_hand`. fastai: the head with the body frozen, then every layer at
    discriminative LRs (fastai's fine_tune), over epochs of the user's images repeated and mixed with the
    rehearsal sample, all with their labels; all: every layer at one LR; head: the head alone."""
    import torch

    from .augment import with_not_one_digit
    from .loop import to_tensor
    from .precision import resolve_precision
    from .transfer import fit_one_cycle, freeze

    if config.method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {config.method!r}; use {', '.join(METHODS)}")
    if model.config.not_one_digit:  # keep reading a wrong cut through touching digits as unsure: rehearse that too
        x_old, y_old = with_not_one_digit(x_old, y_old, model.config.not_one_digit, config.seed)
    # the precision the base trained in is a record of its machine: this one picks its own (bf16 only
    # where native; emulated bf16 fine-tunes 6-10x slower on an AVX2-only CPU)
    model.config = dataclasses.replace(model.config, seed=config.seed,
                                       precision=resolve_precision("auto", model.device))
    if config.method == "style":
        return learn_hand(model, x, y, x_old, y_old, config)
    xs, ys = mix_rehearsal(x, y, x_old, y_old, config.repeats, config.seed)
    lr, lr_div = config.learning_rates()
    if config.method == "fastai":
        return model.fine_tune(xs, ys, config.epochs, config.freeze_epochs, lr, lr_div)
    groups = model.layer_groups()
    epochs = config.epochs + config.freeze_epochs
    if config.method == "all":  # every layer, one LR: plain fine-tuning
        lr = lr / 2
    else:  # head
        freeze(groups)
    learner = fit_one_cycle(model.net, groups, to_tensor(xs), torch.from_numpy(ys), model.config, epochs, lr,
                            device=model.device)
    model.history_ = model.history + [{**h, "phase": config.method} for h in learner.history]
    model.net.eval()
    return model


# ---------------------------------------------------------------------------- learning a hand
def style_views(x, generator, config: FinetuneConfig):
    """A random view of each image of a batch (normalized, [B, 1, 28, 28]) that keeps its writer's style:
    rotated up to `rotate` degrees, scaled up to `scale`, shifted up to `shift` pixels and bent by a smooth
    random field (elastic, Simard et al. 2003) of about `elastic` pixels, in one resampling. Never sheared
    (the slant is the style), thickened or thinned (so is the pen): the views teach the hand, not MNIST's."""
    import torch
    import torch.nn.functional as F

    n, device = x.shape[0], x.device
    rnd = (torch.rand(n, 4, generator=generator) * 2 - 1).to(device)
    angle = rnd[:, 0] * math.radians(config.rotate)
    scale = 1 + rnd[:, 1] * config.scale
    shift = rnd[:, 2:4] * config.shift * 2 / 28  # grid units: [-1, 1] spans 28 pixels
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if config.elastic:  # a 4x4 lattice of random displacements, smoothly interpolated over the image
        coarse = (torch.randn(n, 2, 4, 4, generator=generator) * config.elastic * 2 / 28).to(device)
        grid = grid + F.interpolate(coarse, size=x.shape[2:], mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    background = x.amin()  # the normalized value of a black pixel
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background


# steps of the style method unless config.steps says otherwise, whatever the number of examples: on the
# development writers 150 steps learnt less at 10 examples per digit (93.7% against 95%) and 400 no more
# (94.6%); 300 steps of 32 views and 128 rehearsed images are what fits the 30-second budget on 2 cores
STEPS = 300


def learn_hand(model: NeuralClassifier, x: np.ndarray, y: np.ndarray, x_old: np.ndarray, y_old: np.ndarray,
               config: FinetuneConfig) -> NeuralClassifier:
    """Teaches `model` a hand from a few examples (x, y) without forgetting, in `config.steps or STEPS` steps.

    Each step reads `batch_size` style-keeping views of the user's examples (cross-entropy with their
    labels) beside `rehearsal_batch` rehearsed MNIST images, whose targets are the base model's own
    softened answers, computed once before training (learning without forgetting, Li and Hoiem 2016;
    `distill` 0: their labels instead). Every layer trains from the start (the head alone for the
    first `freeze_share` of the steps), the head at `lr`, the first group at lr / lr_div, on one
    one-cycle schedule; `l2sp` adds a pull toward the base's weights; the batch norms keep the base's
    statistics unless `batchnorm` is "train"."""
    import torch
    import torch.nn.functional as F

    from .callbacks import DISTILL_TEMPERATURE
    from .loop import predict_logits, seeded, to_tensor
    from .precision import autocast
    from .transfer import freeze, spread_lrs, unfreeze

    device, net = model.device, model.net.to(model.device).to(memory_format=torch.channels_last)
    xu, yu = to_tensor(x).to(device), torch.from_numpy(np.asarray(y, np.int64)).to(device)
    xo, yo = to_tensor(x_old).to(device), torch.from_numpy(np.asarray(y_old, np.int64)).to(device)
    with autocast(torch.device(device), model.config.precision):
        targets = F.softmax(predict_logits(net, xo).to(device) / DISTILL_TEMPERATURE, 1)  # the base's answers
    anchor = [p.detach().clone() for p in net.parameters()]
    groups = model.layer_groups()
    lr, lr_div = config.learning_rates()
    lrs = spread_lrs(slice(lr / lr_div, lr), len(groups))
    optimizer = torch.optim.AdamW([{"params": list(g.parameters()), "lr": lr} for g, lr in zip(groups, lrs,
                                                                                             strict=True)],
                                  weight_decay=0.0)  # the L2-SP pull, when asked, replaces decay toward zero
    steps = config.steps or STEPS
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lrs, total_steps=steps, pct_start=0.25)
    frozen = round(config.freeze_share * steps)
    generator = torch.Generator().manual_seed(config.seed)
    # a few examples must not rewrite what 60,000 images measured: the batch norms stay in eval mode
    kept_statistics = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] \
        if config.batchnorm == "frozen" else []
    history, t0 = [], time.perf_counter()
    with seeded(config.seed, device):  # dropout masks: seeded, the caller's random state untouched
        for step in range(steps):
            if step == 0 and frozen:
                freeze(groups)
            elif step == frozen:
                unfreeze(groups)
            net.train()
            for m in kept_statistics:
                m.eval()
            i = torch.randint(len(xu), (config.batch_size,), generator=generator).to(device)
            j = torch.randint(len(xo), (config.rehearsal_batch,), generator=generator).to(device)
            xb = torch.cat([style_views(xu[i], generator, config), xo[j]]).contiguous(
                memory_format=torch.channels_last)
            with autocast(xb.device, model.config.precision):
                logits = net(xb).float()
            mine, old = logits[:len(i)], logits[len(i):]
            loss = F.cross_entropy(mine, yu[i], label_smoothing=config.label_smoothing)
            if config.distill:
                soft = F.log_softmax(old / DISTILL_TEMPERATURE, 1)
                keep = F.kl_div(soft, targets[j], reduction="batchmean") * DISTILL_TEMPERATURE ** 2
                loss = loss + config.distill * keep
            else:  # the labels (the images that are not one digit carry none: left out)
                loss = loss + F.cross_entropy(old, yo[j], ignore_index=NOT_ONE_DIGIT)
            if config.l2sp:
                loss = loss + config.l2sp * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor,
                                                                                     strict=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if (step + 1) % 50 == 0 or step + 1 == steps:
                history.append({"step": step + 1, "loss": float(loss.detach()), "time": time.perf_counter() - t0,
                                "phase": "style"})
    unfreeze(groups)
    if config.keep_share:
        with torch.no_grad():
            for p, a in zip(net.parameters(), anchor, strict=True):
                p.lerp_(a, config.keep_share)
    model.history_ = model.history + history
    net.eval()
    return model


def rehearsal_sample(n: int, seed: int, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST training images, the same number of each digit, seeded; drawn from the training part
    of the seed-0 hold-out split, so `calibration_sample` stays unseen."""
    (images, labels), _ = data.holdout(*data.load("mnist", "train", data_dir), seed=0)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == d), n // 10, replace=False) for d in range(10)])
    return images[pick], labels[pick]


def calibration_sample(data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training images the bundled model held out (the seed-0 split): fine-tuning
    never trains on them, so the temperature is fitted there and the test split only measures."""
    return data.holdout(*data.load("mnist", "train", data_dir), seed=0)[1]


def finetune(base: str | os.PathLike, images: str | os.PathLike | None, out: str | os.PathLike,
             config: FinetuneConfig | None = None, data_dir=None, command: str | None = None, log=None,
             feedback: str | os.PathLike | None = None, user: str | None = None) -> dict:
    """The `digitlab finetune` workflow; returns the figures written to OUT/metrics.json.

    The examples come from an image folder (`images`) or from the corrections a service stored
    (`feedback`, a SQLite file; `user`: only theirs). MNIST test accuracy is measured on ONNX files with
    onnxruntime (3x faster than PyTorch here): before, the base's recorded figure (its card or
    metrics.json) when it has one; after, the export's. OUT/model.onnx appears only once it is complete
    and calibrated (written beside, then renamed into place), so a service watching the folder
    (`digitlab serve --models DIR --watch`) never loads a half-made model."""
    from digitlab.reader.calibration import fit_temperature
    from digitlab.reader.infer import OnnxModel

    from .export import export

    if (images is None) == (feedback is None):
        raise DataError("fine-tuning needs one source of examples: an image folder or a feedback database")
    config = config or FinetuneConfig()
    log = log or (lambda line: print(line, file=sys.stderr))
    t0 = time.perf_counter()
    if images is not None:
        x, y, _ = read_examples(images, config.min_per_class)
        source = str(Path(images).resolve())
    else:
        x, y, _ = read_corrections(feedback, user, config.min_per_class)
        source = f"the corrections in {Path(feedback).resolve()}" + (f" by user {user!r}" if user is not None else "")
    model = load_base(base, data_dir)
    x_test, y_test = data.load("mnist", "test", data_dir)
    before = {"mnist_test_accuracy": recorded_accuracy(base), "own_images_accuracy": model.score(x, y)}
    if before["mnist_test_accuracy"] is None:
        before["mnist_test_accuracy"] = model.score(x_test, y_test)
    how = (f"{config.steps or STEPS} steps" if config.method == "style" else
           f"{config.freeze_epochs} + {config.epochs} epochs")
    log(f"{base}: MNIST test accuracy {before['mnist_test_accuracy']:.4f}, on the {len(x)} images "
        f"{before['own_images_accuracy']:.4f}; fine-tuning ({config.method}, {how}, {config.rehearsal:,} MNIST "
        "images rehearsed)")
    x_old, y_old = rehearsal_sample(config.rehearsal, config.seed, data_dir)
    t1 = time.perf_counter()
    adapt(model, x, y, x_old, y_old, config)
    train_time = time.perf_counter() - t1

    out = Path(out)
    command = command or (f"digitlab finetune {base} --images {images} --out {out}" if images is not None else
                          f"digitlab finetune {base} --feedback {feedback}" + (f" --user {user}" if user else "")
                          + f" --out {out}")
    model.save(out, {"dataset": "mnist", "seed": config.seed, "command": command, "base_model": str(base),
                     "fine_tuned_on": source, "normalization": model.normalization,
                     "split": {"train_images": len(x) + len(x_old), "val_images": 0}})
    metrics = {
        "family": model.family, "dataset": "mnist", "seed": config.seed,
        "command": command,
        "train_time_s": round(train_time, 2),
        "fine_tuning": {
            "base_model": str(base), "images": source, "n_images": len(x),
            "per_class": np.bincount(y, minlength=10).tolist(), "rehearsal_mnist_train_images": len(x_old),
            "settings": dataclasses.asdict(config), "before": before,
            "after": {"own_images_accuracy": model.score(x, y)},
            "note": "Accuracy on the fine-tuning images is measured on those images themselves (not held out).",
        },
    }
    if feedback is not None:
        metrics["fine_tuning"]["feedback"] = {"db": str(Path(feedback).resolve()), "user": user}
    atomic_write_json(out / "metrics.json", metrics)
    staging = out / ".staging" / "model.onnx"
    export(out, staging, card=fine_tuning_card(metrics, len(x_old)))
    # the export measured MNIST test accuracy on the file; the temperature is fitted on held-out
    # training images so that confidences stay honest and the test split only measures
    after = model_card.read(staging)["test"]["accuracy"]
    metrics["test_accuracy"] = metrics["fine_tuning"]["after"]["mnist_test_accuracy"] = after
    x_cal, y_cal = calibration_sample(data_dir)
    temperature = fit_temperature(OnnxModel(staging, threads=0, temperature=1.0).predict_proba(x_cal), y_cal)
    model_card.update(staging, **fine_tuning_card(metrics, len(x_old)), temperature=temperature,
                      calibration="temperature fitted (NLL) on the 5,000 MNIST training images of the seed-0 "
                                  "hold-out, which fine-tuning never trains on; the test split only measures")
    onnx_path = model_card.publish(staging, out / "model.onnx")
    metrics["onnx"] = str(onnx_path)
    metrics["total_time_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def recorded_accuracy(base: str | os.PathLike) -> float | None:
    """The MNIST test accuracy a base model's card or metrics.json records, if any."""
    path = models.resolve(base)
    try:
        if path.is_dir():
            metrics = read_json(path / "metrics.json")
            return float(metrics["test_accuracy"]) if metrics.get("dataset", "mnist") == "mnist" else None
        return float(model_card.read(path)["test"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return None


def fine_tuning_card(metrics: dict, rehearsal: int) -> dict:
    """What the exported card says beyond `export.make_card`: the base, the data, before and after."""
    ft = metrics["fine_tuning"]
    return {
        "training_data": f"fine-tuned from {ft['base_model']} on {ft['n_images']} images from {ft['images']} "
                         f"(per digit: {ft['per_class']}) mixed with {rehearsal:,} MNIST training images",
        "command": metrics["command"],
        "fine_tuning": {k: ft[k] for k in ("base_model", "images", "n_images", "per_class", "settings",
                                           "before", "after", "note")},
    }
