"""The baseline of benchmarks/load.py: a tutorial FastAPI + onnxruntime digit server.

What a first version of such a service looks like: the raw image body, Pillow's decode and a plain
resize to 28x28 (no real preprocessing: no ink detection, cropping, centring or calibration checks), one
network call per request, FastAPI's default JSON. Run by load.py as
`uvicorn naive_server:app --workers 2` (ASGI app below; the bundled model, loaded once per worker).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from PIL import Image

MODEL = os.environ.get("NAIVE_MODEL", "")
CARD = json.loads(open(os.path.splitext(MODEL)[0] + ".json").read()) if MODEL else {}

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"]) if MODEL else None
norm = CARD.get("normalization", {"mean": 0.1307, "std": 0.3081})
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict:
    image = Image.open(io.BytesIO(await request.body())).convert("L").resize((28, 28))
    x = (255 - np.asarray(image, np.float32)) / 255.0  # the pad draws dark ink on white; MNIST is bright ink
    x = ((x - norm["mean"]) / norm["std"])[None, None].astype(np.float32)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {"label": int(p.argmax()), "confidence": float(p.max()), "probabilities": p.round(4).tolist()}
