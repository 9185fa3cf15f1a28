"""PyTorch models behind the Classifier contract. A family defines its Config and `build()`."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes
from digitlab.lab.callbacks import Callback
from digitlab.lab.checkpoint import load_checkpoint, read_checkpoint
from digitlab.lab.loop import MNIST_MEAN, MNIST_STD, Learner, TrainConfig, predict_logits, seeded, to_tensor
from digitlab.lab.lr_finder import lr_find
from digitlab.lab.precision import native_bf16, resolve_precision
from digitlab.lab.transfer import discriminative_groups, fine_tune, freeze
from digitlab.reader.calibration import softmax

from .base import Classifier, as_images, config_from


@dataclass
class NeuralConfig(TrainConfig):
    """Training settings plus the family's architecture settings (each family's subclass adds its own).

    `lr = 0` means: run the LR finder on the training data first and train with its suggestion,
    which then replaces `lr` (the finder's sweep is the model's `lr_finder_`).
    """


class NeuralClassifier(Classifier):
    Config = NeuralConfig
    trains_in_epochs = True
    normalization = {"mean": MNIST_MEAN, "std": MNIST_STD}  # what `to_tensor` feeds the network

    def __init__(self, config=None, device: str = "cpu", **overrides) -> None:
        """`device` ("cpu", "cuda") is where it trains: a run-time choice, not a saved setting."""
        super().__init__(config, **overrides)
        self.device = device
        with seeded(self.config.seed):
            self.net = self.build()
        self.learner: Learner | None = None
        self.progress = False  # the LR finder's progress line on stderr (`digitlab train` turns it on)

    def build(self) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def split(net: nn.Module) -> list[nn.Module]:
        """The family's network cut into groups from input to output; the last one is the head, the
        rest the body. Fine-tuning freezes the body and gives each group its own learning rate."""
        raise NotImplementedError

    def layer_groups(self) -> list[nn.Module]:
        return self.split(self.net)

    def fit(self, x, y, x_val=None, y_val=None, callbacks: list[Callback] | tuple = ()) -> NeuralClassifier:
        """Trains (or, after `resume`, goes on training); `callbacks` join the Learner's for this fit.

        The model owns its config and its history: the Learner trains with the config (its precision
        resolved here, once) and appends to the model's `history_` list itself."""
        x = as_images(x)
        if self.learner is None:  # a first fit; after `resume` the Learner is the checkpoint's
            self.config = dataclasses.replace(self.config,
                                              precision=resolve_precision(self.config.precision, self.device))
            if self.config.lr <= 0:
                self.find_lr(to_tensor(x), torch.from_numpy(np.asarray(y, dtype=np.int64)))
            if not hasattr(self, "history_"):
                self.history_ = []  # a loaded model's curves go on in the list it has
            self.learner = Learner(self.net, self.config, device=self.device, history=self.history_)
        if self.config.realistic_views:  # the originals plus their renderings: [views, N, 28, 28]
            from digitlab.lab.augment import realistic_views

            x = np.concatenate([x[None], realistic_views(x, self.config.realistic_views, seed=self.config.seed,
                                                         forms=self.config.forms)])
        if self.config.not_one_digit:  # then images that are not one digit, labelled NOT_ONE_DIGIT
            from digitlab.lab.augment import with_not_one_digit

            x, y = with_not_one_digit(x, np.asarray(y), self.config.not_one_digit, seed=self.config.seed)
        xt = torch.stack([to_tensor(v) for v in x]) if x.ndim == 4 else to_tensor(x)
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        xv = to_tensor(as_images(x_val)) if x_val is not None else None
        yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64)) if y_val is not None else None
        self.learner.use(callbacks, self.load_teachers())
        self.learner.fit(xt, yt, xv, yv)
        self.net = self.learner.net
        return self

    def load_teachers(self) -> list[nn.Module]:
        """The networks of `config.teachers` (model directories), to be learned from (eval mode, on this
        model's device). They must read the same normalized 28x28 input, as every neural family does."""
        from . import load

        teachers = []
        for path in filter(None, (p.strip() for p in self.config.teachers.split(","))):
            teacher = load(path)
            if not isinstance(teacher, NeuralClassifier) or teacher.normalization != self.normalization:
                raise ModelError(f"{path}: a teacher must be a neural model (mlp, cnn, fast, best, resnet34)")
            teachers.append(teacher.net.to(self.device).eval())
        return teachers

    # -- transfer learning -----------------------------------------------------------------
    def load_body(self, other: NeuralClassifier) -> None:
        """Copies the body (every group but the head) of a trained model of the same architecture;
        the head keeps its fresh initialization (the other model may have learned other classes)."""
        if other.family != self.family:
            raise ModelError(f"cannot start a {self.family} from a {other.family} model: the bodies differ")
        for mine, theirs in zip(self.layer_groups()[:-1], other.layer_groups()[:-1], strict=True):
            try:
                mine.load_state_dict(theirs.state_dict())
            except RuntimeError as e:
                raise ModelError(f"the {other.family} model's body does not fit this one ({e})") from None

    def fine_tune(self, x, y, epochs: int = 1, freeze_epochs: int = 1, lr: float | None = None,
                  lr_div: float = 100.0, x_val=None, y_val=None, callbacks: list[Callback] | tuple = ()
                  ) -> NeuralClassifier:
        """fastai's fine_tune (transfer.fine_tune) on this family's layer groups. `lr` is the head's peak
        LR in the frozen phase; None takes the family's, 0 asks the LR finder on the frozen model."""
        xt, yt = to_tensor(as_images(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
        xv = to_tensor(as_images(x_val)) if x_val is not None else None
        yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64)) if y_val is not None else None
        lr = self.config.lr if lr is None else lr
        if lr <= 0:
            lr = self.find_lr_frozen(xt, yt)
        history = fine_tune(self.net, self.layer_groups(), xt, yt, self.config, epochs, freeze_epochs, lr,
                            lr_div, callbacks, xv, yv, self.device)
        self.history_ = list(self.history) + history
        self.net.eval()
        return self

    def find_lr_frozen(self, xt: torch.Tensor, yt: torch.Tensor) -> float:
        """The LR finder on a frozen copy of this network (only the head learns), for fine-tuning."""
        net = copy.deepcopy(self.net)
        groups = self.split(net)
        freeze(groups)
        self.lr_finder_ = lr_find(net, xt, yt, self.config, device=self.device,
                                  param_groups=discriminative_groups(groups, 1.0))
        return self.lr_finder_["suggestion"]

    def find_lr(self, xt: torch.Tensor, yt: torch.Tensor) -> float:
        """Runs the LR finder on a copy of the network and makes its suggestion this model's peak LR."""
        if self.learner is not None:
            raise ModelError("the LR finder must run before training starts")
        self.lr_finder_ = lr_find(copy.deepcopy(self.net), xt, yt, self.config, device=self.device,
                                  progress=self.progress)
        self.config = dataclasses.replace(self.config, lr=self.lr_finder_["suggestion"])
        return self.config.lr

    def resume(self, directory: str | Path, meta: dict | None = None) -> dict:
        """Continues from a checkpoint (checkpoint.save_checkpoint): the next `fit` starts at the next
        epoch, with the checkpoint's settings (its architecture, schedule and length). `meta`: the
        checkpoint's JSON, when the caller has read it already."""
        meta = meta if meta is not None else read_checkpoint(directory)
        self.config = config_from(self.Config, meta["config"])
        if self.config.precision == "bf16" and not native_bf16(self.device):
            # bf16 was native where the run started; here it would be emulated, 6-10x slower than fp32
            self.config = dataclasses.replace(self.config, precision="fp32")
        self.net = self.build()  # its weights come from the checkpoint
        self.history_ = []
        self.learner = Learner(self.net, self.config, device=self.device, history=self.history_)
        return load_checkpoint(self.learner, directory, meta)

    def extend(self, epochs: int) -> str:
        """A resumed run's new length (Learner.extend); returns what changes, "" if nothing."""
        change = self.learner.extend(epochs)
        self.config = self.learner.config
        return change

    @property
    def train_time(self) -> float:
        return self.learner.train_time if self.learner else 0.0

    @property
    def classes_(self) -> np.ndarray:
        """The labels of the network's outputs: the ten digits, as every dataset digitlab reads has."""
        return np.arange(10)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(predict_logits(self.net, to_tensor(as_images(x))).numpy())

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write_bytes(directory / "weights.safetensors", save(state))

    def load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_file

        path = directory / "weights.safetensors"
        if not path.is_file():
            raise ModelError(f"{directory}: weights.safetensors missing")
        try:
            self.net.load_state_dict(load_file(path))
        except (RuntimeError, OSError) as e:
            raise ModelError(f"{path}: weights do not fit the {self.family} architecture ({e})") from None
        if self.config.channels_last:  # the layout it was trained in: same kernels, bit-identical outputs
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net.eval()
