"""The reader's learned structure step: a small network that tells printed lines from handwriting,
pixel by pixel, in an ink map (reader/structure.py runs it; this trains and exports it).

Rules find a printed line by its length, straightness and thinness, but break where a digit touches
or runs along a line: each fix traded one failure for another. The network learns the same cues from
pages drawn with `digitlab.testing.paper` (MNIST *training* digits in other writers' hands, in boxes,
combs, on ruled and squared paper and on lines; and digits alone, some filling their frame, which
hold no line at all), where which pixel is line and which is handwriting is known exactly. It sees
an ink map scaled to SIDE px on its short side through dilated convolutions (a 63 px field of view:
a line runs across most of it, a stroke curves within it).

    digitlab train-lines --out runs/lines [--bundle]      # writes line-model.onnx + line-model.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from digitlab.files import atomic_write_bytes, atomic_write_text
from digitlab.lab.augment import crop_to_ink, styled_ink
from digitlab.progress import Progress
from digitlab.reader.structure import LINE_MODEL, SIDE, model_sha256
from digitlab.testing import paper

KINDS = ("box", "comb", "ruled", "squared", "underline", "plain", "frame")


@dataclass
class LinesConfig:
    steps: int = 1500
    batch_size: int = 12
    lr: float = 3e-3
    width: int = 12  # channels of every layer
    pages: int = 3000  # drawn once, then cropped and flipped anew at every step
    crop: int = 160  # training crops are SIDE x crop
    seed: int = 0


def line_net(width: int = 12):
    """1 -> width channels, four dilated 3x3 convolutions (2, 4, 8, 16), one 1x1 to a logit per pixel."""
    from torch import nn

    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for d in (2, 4, 8, 16):
        layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(width, 1, 1))


def draw_page(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ink map uint8, line target 0/1, pixels that count 0/1) of one page at SIDE px on its short side."""
    kind = str(rng.choice(KINDS))
    n = int(rng.integers(2, 7)) if kind == "comb" else int(rng.integers(1, 4)) if kind in ("ruled", "plain") else 1
    height = int(rng.integers(24, 120))
    inks = []
    for i in rng.integers(len(images), size=n):
        ink = crop_to_ink(styled_ink(images[i], rng))
        inks.append(cv2.resize(ink, (max(2, round(ink.shape[1] * height / ink.shape[0])), height),
                               interpolation=cv2.INTER_AREA))
    if kind == "frame":  # a digit squashed into its frame: its bars span the picture, and are no line
        side = int(rng.integers(40, 120))
        writing = cv2.resize(inks[0], (side, side), interpolation=cv2.INTER_AREA)
        lines = np.zeros_like(writing)
    else:
        writing, lines = paper.layout(inks, "underline" if kind == "plain" else kind, rng)
        if kind == "plain":
            lines[:] = 0
    contrast = rng.uniform(0.25, 1.0)  # printed lines as faint as grey on paper or as dark as the pen
    x = np.maximum(writing * rng.uniform(0.7, 1.0), lines * contrast)
    angle = rng.uniform(-2, 2)
    if abs(angle) > 0.3:
        h, w = x.shape
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        x, writing, lines = (cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR) for a in (x, writing, lines))
    f = SIDE / min(x.shape)
    size = (max(1, round(x.shape[1] * f)), max(1, round(x.shape[0] * f)))
    x, writing, lines = (cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (x, writing, lines))
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0)) + rng.normal(0, rng.uniform(0, 0.04), x.shape)
    x = np.clip(x / max(float(x.max()), 1e-6), 0, 1)
    target = ((lines > 0.3) & (writing < 0.3)).astype(np.uint8)
    counts = cv2.dilate((x > 0.1).astype(np.uint8), np.ones((3, 3), np.uint8))  # ink and its edge
    return (x * 255).astype(np.uint8), target, counts


def crops(pages: list, rng: np.random.Generator, batch: int, width: int) -> tuple:
    """A batch of SIDE x width crops (padded with paper where a page is narrower), flipped at random."""
    xs, ts, cs = (np.zeros((batch, 1, SIDE, width), np.float32) for _ in range(3))
    for b in range(batch):
        x, t, c = pages[int(rng.integers(len(pages)))]
        if rng.random() < 0.5:
            x, t, c = x[:, ::-1], t[:, ::-1], c[:, ::-1]
        if rng.random() < 0.5:
            x, t, c = x[::-1], t[::-1], c[::-1]
        left = int(rng.integers(0, max(1, x.shape[1] - width + 1)))
        top = int(rng.integers(0, max(1, x.shape[0] - SIDE + 1)))
        for dst, src in ((xs, x), (ts, t), (cs, c)):
            part = src[top:top + SIDE, left:left + width]
            dst[b, 0, :part.shape[0], :part.shape[1]] = part
    import torch

    return torch.from_numpy(xs / 255), torch.from_numpy(ts), torch.from_numpy(cs)


def train(images: np.ndarray, config: LinesConfig) -> tuple:
    """The network trained on pages drawn from `images` (MNIST training digits), and its figures on
    pages it never saw (pixel precision and recall of "line" among ink pixels)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    bar = Progress("drawing pages", total=config.pages + 200)
    pages = []
    for i in range(config.pages + 200):
        pages.append(draw_page(images, rng))
        bar.update(i + 1)
    bar.close()
    held_out, pages = pages[:200], pages[200:]
    net = line_net(config.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps)
    bar = Progress("training the line finder", total=config.steps)
    t0 = time.perf_counter()
    for step in range(config.steps):
        x, t, c = crops(pages, rng, config.batch_size, config.crop)
        logits = net(x)
        # lines are a tenth of the ink: weigh them up so that the net does not call every pixel handwriting
        loss = (nn.functional.binary_cross_entropy_with_logits(logits, t, weight=c * (1 + 4 * t), reduction="sum")
                / c.sum().clamp(min=1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.update(step + 1, f"loss {loss.item():.3f}")
    bar.close()
    return net.eval(), {"train_time_s": round(time.perf_counter() - t0, 1), **measure(net, held_out)}


def measure(net, pages: list) -> dict:
    """Pixel precision and recall of "line" on ink pixels of held-out pages, and handwriting kept."""
    import torch

    found = right = lines = kept = writing = 0
    for x, t, c in pages:
        with torch.no_grad():
            p = net(torch.from_numpy(x / np.float32(255))[None, None])[0, 0].numpy() > 0
        ink = (x > 25) & (c > 0)
        found += int((p & ink).sum())
        right += int((p & ink & (t > 0)).sum())
        lines += int((ink & (t > 0)).sum())
        writing += int((ink & (t == 0)).sum())
        kept += int((~p & ink & (t == 0)).sum())
    return {"line_precision": round(right / max(found, 1), 4), "line_recall": round(right / max(lines, 1), 4),
            "handwriting_kept": round(kept / max(writing, 1), 4), "held_out_pages": len(pages)}


def export(net, out: Path, config: LinesConfig, figures: dict, command: str) -> Path:
    """line-model.onnx and line-model.json (its card: what it is, how it was made, its figures, and the
    SHA-256 of the .onnx file, which the reader checks on loading)."""
    import onnx
    import torch

    from digitlab.lab.export import OPSET, quiet_onnx_export

    out.mkdir(parents=True, exist_ok=True)
    path = out / LINE_MODEL.name
    with quiet_onnx_export():
        program = torch.onnx.export(net.eval(), (torch.zeros(1, 1, SIDE, 128),), input_names=["ink"],
                                    output_names=["logits"],
                                    dynamic_shapes=({2: torch.export.Dim("height", min=16, max=8 * 1024),
                                                     3: torch.export.Dim("width", min=16, max=8 * 1024)},),
                                    opset_version=OPSET, dynamo=True, verbose=False)
    data = program.model_proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write_bytes(path, data)
    card = {"name": "digitlab line finder", "format": f"onnx opset {OPSET}",
            "input": f"ink float32 [1, 1, height, width]: the ink map (0-1, paper 0), {SIDE} px on its short side",
            "output": "logits float32 [1, 1, height, width]: printed line where > 0 (probability = sigmoid)",
            "training_data": "pages drawn by digitlab.testing.paper with MNIST training digits in other writers' "
                             "hands (lab/augment.styled_ink); no other digit collection, no fonts",
            "config": asdict(config), "figures": figures, "command": command, "seed": config.seed,
            "exported": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "environment": f"torch {torch.__version__}, Python {platform.python_version()}",
            "sha256": model_sha256(data)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return path


def train_lines(out: str | os.PathLike, config: LinesConfig, bundle: bool = False, command: str = "") -> dict:
    """Trains, exports to `out` (and, with bundle, over the reader's shipped line finder); the figures."""
    from digitlab.data import load

    images, _ = load("mnist", "train")
    net, figures = train(images, config)
    path = export(net, Path(out), config, figures, command)
    if bundle:
        atomic_write_bytes(LINE_MODEL, path.read_bytes())
        atomic_write_text(LINE_MODEL.with_suffix(".json"), path.with_suffix(".json").read_text())
    return {"onnx": str(path), **figures}
