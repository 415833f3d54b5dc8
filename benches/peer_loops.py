"""The loops camclassd is measured against, one per process, so that each one's CPU time is its own.

peer_loops.py MODE IMAGE MODEL SECONDS [THREADS] [FPS]

MODE:
  bare    session.run on a ready tensor: the inference floor (no decode, no preprocessing)
  decode  cv2.imdecode alone (libjpeg-turbo): the decode a native pipeline pays per frame
  opencv  the loop a user would write: cv2.imdecode + cv2.resize + numpy + onnxruntime
  pil     the same with Pillow (decode, bilinear resize, crop) instead of OpenCV

FPS 0 (the default) runs flat out; otherwise frames are paced like a camera's. Prints one JSON line: frames,
frames per second, and CPU milliseconds per frame (process CPU time, every thread, over the frames), after a
warm-up that is not counted.
"""
import io
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

mode, image_path, model_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
fps = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
data = open(image_path, "rb").read()

opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
MEAN, STD = 127.5, 127.5  # EfficientNet-Lite's recipe, as the model's metadata says


def crop_normalise(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - 224) // 2, (w - 224) // 2
    x = (rgb[top:top + 224, left:left + 224].astype(np.float32) - MEAN) / STD
    return x.transpose(2, 0, 1)[None]


def with_opencv(raw: bytes) -> np.ndarray:
    import cv2
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    s = 256 / min(w, h)
    bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
    return crop_normalise(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def with_pil(raw: bytes) -> np.ndarray:
    from PIL import Image
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    return crop_normalise(np.asarray(img))


tensor = with_pil(data)
step = {
    "bare": lambda: session.run(None, {name: tensor}),
    "decode": lambda: __import__("cv2").imdecode(np.frombuffer(data, np.uint8), 1),
    "opencv": lambda: session.run(None, {name: with_opencv(data)}),
    "pil": lambda: session.run(None, {name: with_pil(data)}),
}[mode]

for _ in range(5):
    step()
n = 0
cpu0, wall0 = time.process_time(), time.perf_counter()
next_at = wall0
while time.perf_counter() - wall0 < seconds:
    if fps > 0:
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        next_at += 1.0 / fps
    step()
    n += 1
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
print(json.dumps({
    "what": f"{mode}, {threads} thread{'s' if threads > 1 else ''}" + (f", {fps:g} fps" if fps else ""),
    "frames": n,
    "frames_per_s": n / wall,
    "cpu_ms_per_frame": 1e3 * cpu / max(n, 1),
    "cpu_pct": 100 * cpu / wall,
    # Peak resident memory of this process (kB on Linux).
    "peak_rss_mib": __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024,
}))
