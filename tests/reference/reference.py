#!/usr/bin/env python3
"""Reference classifier for camclassd: the behaviour the Rust side must match.

Usage:
    reference.py --model MODEL.onnx [--top K] IMAGE...

Prints one JSON object per image and line, the same shape as
`camclassd classify --json`:

    {"image": PATH, "top": [{"class_id": N, "label": "...", "score": F}, ...]}

An image that cannot be decoded prints {"image": PATH, "error": "..."} instead,
and the exit status is then 1 (after all images have been tried). A model that
cannot be loaded or lacks the metadata gives a message on stderr and status 2.

Every preprocessing parameter comes from the model's `camclassd.*`
metadata_props; a model without them is refused (there are no defaults).

Pipeline, step by step (each choice is deliberate; the Rust side copies it):

1. Decode with PIL, then `ImageOps.exif_transpose` (EXIF Orientation 1-8).
   A JPEG (not CMYK) is decoded with `img.draft("RGB", size)`, `size` being
   the step-3 size of the whole picture: libjpeg then decodes it reduced by
   1/2, 1/4 or 1/8 in the DCT domain, the largest reduction s with
   s * size <= the JPEG's size on both sides. camclassd decodes JPEG with
   libjpeg-turbo and picks the same reduction by the same rule
   (`preprocess::choose_scale`), so both sides resize the same pixels.
2. `convert("RGB")`, which is PIL's plain per-pixel conversion:
   L -> R=G=B; RGBA/LA/PA -> alpha is dropped, no compositing;
   CMYK -> R = (255-C)(255-K)/255 (PIL undoes Adobe-inverted JPEG CMYK on
   decode); P -> palette lookup. 16-bit-per-channel RGB PNGs are decoded by
   PIL straight to 8 bits by keeping the high byte.
3. Resize so the shorter side equals `camclassd.resize`, PIL BILINEAR
   (a triangle filter whose support widens when downscaling, i.e. it
   antialiases; it is not OpenCV-style 4-tap bilinear). The result is 8-bit
   again (PIL rounds). The longer side is round-half-up(long * resize / short),
   computed in integers, so an exact .5 always rounds up.
4. Centre crop to `camclassd.input_size` (height,width) with
   left = (w - crop_w) // 2 and top = (h - crop_h) // 2, i.e. floor. We do not
   use torchvision's round((w - crop_w) / 2): Python's round is round-half-even,
   which rounds odd margins up or down depending on their value.
5. float32, (x - mean[c]) / std[c] in 0..255 pixel units, channel order and
   layout from the metadata.
6. onnxruntime CPU session, softmax over the logits (computed in float64),
   top K by score; ties go to the lower class id.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

META_PREFIX = "camclassd."
# Keys this reference reads; all are required.
REQUIRED_KEYS = (
    "schema",
    "layout",
    "channel_order",
    "input_size",
    "resize",
    "interpolation",
    "crop",
    "mean",
    "std",
    "output",
    "labels",
)


class ModelError(ValueError):
    """The model cannot be used: bad camclassd metadata or an unexpected signature."""


def _numbers(meta: dict[str, str], key: str, count: int, kind: type = float) -> tuple:
    parts = meta[key].split(",")
    try:
        if len(parts) != count:
            raise ValueError
        return tuple(kind(p) for p in parts)
    except ValueError:
        raise ModelError(
            f"{META_PREFIX}{key}: expected {count} comma-separated {kind.__name__}s, got {meta[key]!r}"
        ) from None


def _choice(meta: dict[str, str], key: str, allowed: tuple[str, ...]) -> str:
    value = meta[key]
    if value not in allowed:
        raise ModelError(f"{META_PREFIX}{key}: {value!r} is not one of {allowed}")
    return value


@dataclass(frozen=True)
class Preprocess:
    """Image preprocessing as described by a model's camclassd metadata."""

    layout: str  # "NCHW" or "NHWC"
    channel_order: str  # "RGB" or "BGR"
    height: int
    width: int
    resize: int  # shorter side after resizing
    mean: tuple[float, float, float]  # per channel, in the model's channel order
    std: tuple[float, float, float]

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Preprocess:
        """Validate the unprefixed camclassd metadata (key -> value)."""
        missing = [k for k in REQUIRED_KEYS if k not in meta]
        if missing:
            raise ModelError("model lacks metadata: " + ", ".join(META_PREFIX + k for k in missing))
        if meta["schema"] != "1":
            raise ModelError(f"{META_PREFIX}schema: unsupported version {meta['schema']!r}")
        _choice(meta, "interpolation", ("bilinear",))
        _choice(meta, "crop", ("center",))
        _choice(meta, "output", ("logits",))
        height, width = _numbers(meta, "input_size", 2, int)
        (resize,) = _numbers(meta, "resize", 1, int)
        if min(height, width) <= 0 or resize < max(height, width):
            raise ModelError(f"{META_PREFIX}resize ({resize}) must be >= both input_size sides ({height},{width})")
        std = _numbers(meta, "std", 3)
        if any(s == 0 for s in std):
            raise ModelError(f"{META_PREFIX}std must not contain 0")
        return cls(
            layout=_choice(meta, "layout", ("NCHW", "NHWC")),
            channel_order=_choice(meta, "channel_order", ("RGB", "BGR")),
            height=height,
            width=width,
            resize=resize,
            mean=_numbers(meta, "mean", 3),
            std=std,
        )

    def load(self, path: str | Path) -> Image.Image:
        """Decode an image file to upright 8-bit RGB (steps 1-2), a JPEG reduced as step 3 allows."""
        with Image.open(path) as img:
            if img.format == "JPEG" and img.mode != "CMYK":
                # The stored orientation's step-3 size: the rule is symmetric, so a rotated picture
                # gets the reduction its upright form would.
                img.draft("RGB", self.resized_size(*img.size))
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after scaling the shorter side to `resize`, half-up rounding."""
        short, long = min(width, height), max(width, height)
        new_long = (2 * long * self.resize + short) // (2 * short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> one float32 sample (without batch dim) (steps 3-5)."""
        img = img.resize(self.resized_size(*img.size), Image.BILINEAR)
        left = (img.width - self.width) // 2
        top = (img.height - self.height) // 2
        img = img.crop((left, top, left + self.width, top + self.height))
        x = np.asarray(img, dtype=np.float32)  # HWC, RGB
        if self.channel_order == "BGR":
            x = x[:, :, ::-1]
        x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


def camclassd_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's camclassd.* metadata_props, without the prefix."""
    props = session.get_modelmeta().custom_metadata_map
    return {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


class Classifier:
    def __init__(self, model_path: str | Path):
        try:
            self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's pybind errors (InvalidProtobuf, NoSuchFile, ...) share no base
            raise ModelError(f"cannot load model: {e}") from e
        meta = camclassd_metadata(self.session)
        self.preprocess = Preprocess.from_metadata(meta)
        self.labels = meta["labels"].split("\n")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
        self.input = inputs[0]
        p = self.preprocess
        sample = [3, p.height, p.width] if p.layout == "NCHW" else [p.height, p.width, 3]
        shape = self.input.shape
        # Symbolic (str) or unknown (None) dims accept anything.
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], sample, strict=True)):
            raise ModelError(f"input shape {shape} does not match the metadata ({p.layout} {sample})")
        if outputs[0].shape[-1] != len(self.labels):
            raise ModelError(f"{len(self.labels)} labels for {outputs[0].shape[-1]} outputs")

    def scores(self, path: str | Path) -> np.ndarray:
        """Softmax probabilities (float64) for one image file."""
        x = self.preprocess(self.preprocess.load(path))[None]
        (logits,) = self.session.run(None, {self.input.name: x})
        return softmax(logits[0])

    def classify(self, path: str | Path, top: int) -> list[dict]:
        probs = self.scores(path)
        order = np.argsort(-probs, kind="stable")[:top]
        return [{"class_id": int(i), "label": self.labels[i], "score": float(probs[i])} for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ONNX model with camclassd metadata")
    parser.add_argument("--top", type=int, default=5, help="number of classes to print (default 5)")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")

    try:
        classifier = Classifier(args.model)
    except ModelError as e:
        print(f"{args.model}: {e}", file=sys.stderr)
        return 2

    status = 0
    for path in args.images:
        try:
            result = {"image": path, "top": classifier.classify(path, args.top)}
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            # PIL raises OSError subclasses (UnidentifiedImageError, truncated data) for bad files.
            result, status = {"image": path, "error": str(e)}, 1
        print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
