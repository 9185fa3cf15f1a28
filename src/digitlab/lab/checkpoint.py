"""Checkpoints of a training run, for `digitlab train --resume`.

A checkpoint is a folder: weights-<epoch>.safetensors, optimizer-<epoch>.safetensors (the optimizer's
tensors), rng-<epoch>.safetensors (the random generators' states) and checkpoint.json (epoch,
history, config, the optimizer's and scheduler's other state). checkpoint.json is written last and
names the files of its epoch, so a crash mid-save leaves the previous checkpoint valid. No pickles.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes, atomic_write_json, read_json
from digitlab.lab.loop import Learner

CHECKPOINT_JSON = "checkpoint.json"


def save_checkpoint(learner: Learner, directory: str | Path, extra: dict | None = None) -> Path:
    from safetensors.torch import save

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
        "epoch": epoch, **names, "config": dataclasses.asdict(learner.config), "history": learner.history,
        "train_time": learner.train_time, "optimizer_state": state,
        "schedule_start": learner.schedule_start, "scheduler_state": _jsonable(scheduler), **(extra or {})})
    for old in directory.glob("*.safetensors"):
        if old.name not in names.values():
            old.unlink(missing_ok=True)
    return directory


def read_checkpoint(directory: str | Path) -> dict:
    """The checkpoint's JSON; raises ModelError when there is none or it is damaged."""
    path = Path(directory) / CHECKPOINT_JSON
    if not path.is_file():
        raise ModelError(f"{directory}: no checkpoint to resume from ({CHECKPOINT_JSON} missing)")
    try:
        meta = read_json(path)
        meta["epoch"], meta["weights"], meta["optimizer"], meta["config"], meta["history"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: damaged checkpoint") from None
    return meta


def load_checkpoint(learner: Learner, directory: str | Path, meta: dict | None = None) -> dict:
    """Restores weights, optimizer, scheduler and random states, history and time; `fit` then
    starts at the next epoch. `meta`: the checkpoint's JSON, when the caller has read it already."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = meta if meta is not None else read_checkpoint(directory)
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
    learner.history[:] = meta["history"]  # in place: the list may be its model's (NeuralClassifier.history_)
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
