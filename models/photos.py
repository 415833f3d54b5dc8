"""The photographs camclassd's INT8 work is made from, split once into calibration and evaluation.

Every photo comes from a pinned PyPI package (scikit-image's bundled data: nothing is downloaded). The two
lists below never share a photo, so the evaluation set (models/int8_eval.py) measures the INT8 model on
pictures its calibration (models/build_models.py) never saw. `augment` makes the variations both use:
flips, crops, rotations, scales, brightness, contrast and JPEG qualities, from a fixed seed, so every run
gives the same pictures on every machine.

Caveat: the two stereo motorcycle photos are two views of one scene; one is on each side.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance
from skimage import data as skdata

Loader = Callable[[], np.ndarray]

# Calibration: objects, people, scenes and textures, so that activation ranges see more than one kind of
# picture. The textures and documents matter: a camera sees walls, floors and signs as often as objects.
CALIBRATION_PHOTOS: dict[str, Loader] = {
    "camera": skdata.camera,  # greyscale
    "motorcycle_right": lambda: skdata.stereo_motorcycle()[1],
    "retina": skdata.retina,
    "brick": skdata.brick,
    "grass": skdata.grass,
    "gravel": skdata.gravel,
    "coins": skdata.coins,
    "moon": skdata.moon,
    "page": skdata.page,
    "text": skdata.text,
    "cell": skdata.cell,
    "immunohistochemistry": skdata.immunohistochemistry,
    "colorwheel": skdata.colorwheel,
    "clock": skdata.clock,
    "logo": skdata.logo,
    "microaneurysms": skdata.microaneurysms,
}

# Evaluation: the photos with a clear ImageNet subject (cat, espresso, rocket, moped) and two scenes.
EVALUATION_PHOTOS: dict[str, Loader] = {
    "chelsea": skdata.chelsea,
    "coffee": skdata.coffee,
    "rocket": skdata.rocket,
    "motorcycle_left": lambda: skdata.stereo_motorcycle()[0],
    "astronaut": skdata.astronaut,
    "hubble": skdata.hubble_deep_field,
}

assert not set(CALIBRATION_PHOTOS) & set(EVALUATION_PHOTOS), "a photo is in both sets"


def load(loader: Loader) -> Image.Image:
    """The photo as 8-bit RGB (greyscale and RGBA photos converted as PIL's convert does)."""
    return Image.fromarray(loader()).convert("RGB")


def augment(photo: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One random variation of `photo` and the JPEG quality to store it with.

    A mirror half of the time, a crop of 30-100 % of the area anywhere in the photo, a rotation of up to 20
    degrees a third of the time, a rescale by 0.5-2x (so the camclassd resize sees 50-1600 px inputs),
    brightness and contrast 0.6-1.4x, JPEG quality 50-95.
    """
    img = photo
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = np.sqrt(rng.uniform(0.3, 1.0))
    w, h = max(16, round(img.width * scale)), max(16, round(img.height * scale))
    left, top = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
    img = img.crop((left, top, left + w, top + h))
    if rng.random() < 0.3:
        img = img.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
    zoom = rng.uniform(0.5, 2.0)
    size = (max(8, round(img.width * zoom)), max(8, round(img.height * zoom)))
    img = img.resize(size, Image.Resampling.BILINEAR)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.6, 1.4))
    return img, int(rng.integers(50, 96))


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variations(photos: dict[str, Loader], per_photo: int, seed: int) -> list[tuple[str, Image.Image, int | None]]:
    """(name, image, JPEG quality or None for lossless) for each photo: whole, mirrored, then `per_photo`
    augmentations, in a fixed order."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Image.Image, int | None]] = []
    for name, loader in photos.items():
        photo = load(loader)
        out.append((f"{name}", photo, None))
        out.append((f"{name}-mirror", photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), None))
        for i in range(per_photo):
            img, quality = augment(photo, rng)
            out.append((f"{name}-{i:03d}", img, quality))
    return out
