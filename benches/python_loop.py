"""The straightforward Python loop camclassd is compared with: PIL decode + resize + numpy + onnxruntime.

python_loop.py IMAGE MODEL SECONDS — classifies the same JPEG over and over, sequentially, with the same
model and intra-op threads ($THREADS), and prints frames per second and the bare session.run rate.
"""
import io
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

image_path, model_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
threads = int(os.environ.get("THREADS", "2"))
data = open(image_path, "rb").read()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name


def preprocess(raw: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) - 127.5) / 127.5
    return x.transpose(2, 0, 1)[None]


def rate(fn) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


tensor = preprocess(data)
loop = rate(lambda: session.run(None, {name: preprocess(data)}))
bare = rate(lambda: session.run(None, {name: tensor}))
print(f"python loop (PIL+numpy+onnxruntime, {threads} threads): {loop:.1f} frames/s")
print(f"bare session.run ({threads} threads): {bare:.1f} runs/s")
