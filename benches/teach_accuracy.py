#!/usr/bin/env python3
"""`camclassd train` against scikit-learn on the same features (run by scripts/bench-teach).

Usage: teach_accuracy.py CAMCLASSD

For each teach set and pictures per class: camclassd's cross-validated accuracy (what it tells the user) and
held-out accuracy (what it does on new pictures), scikit-learn's LogisticRegression and a nearest-class-mean
classifier held out, on camclassd's own embeddings of the pictures (its cache: sha256 of the file → features).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
SETS = ROOT / "tests/data/generated/teach"
C_GRID = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]  # camclassd's (src/teach/logistic.rs)
SIZES = [5, 10, 20, 50]
DRAWS = 5  # random training subsets per size (fixed seeds): one draw of 5 pictures says little


def pictures(split: Path) -> list[tuple[Path, str]]:
    return [(f, c.name) for c in sorted(split.iterdir()) if c.is_dir() for f in sorted(c.iterdir())]


def subset(set_dir: Path, n: int, into: Path, draw: int) -> Path:
    out = into / f"{set_dir.name}-{n}-{draw}"
    rng = np.random.default_rng(draw)
    for c in sorted((set_dir / "train").iterdir()):
        (out / c.name).mkdir(parents=True)
        files = sorted(c.iterdir())
        for i in sorted(rng.choice(len(files), n, replace=False)):
            shutil.copy(files[i], out / c.name / files[i].name)
    return out


def train(camclassd: str, folder: Path, model: Path, cache: Path) -> dict:
    env = {"XDG_CACHE_HOME": str(cache), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [camclassd, "train", str(folder), "--out", str(model), "--json"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def embeddings(cache: Path) -> dict[bytes, np.ndarray]:
    (path,) = list((cache / "camclassd/teach").glob("embeddings-*.bin"))
    trunk = next((cache / "camclassd/teach").glob("trunk-*.onnx"))
    import onnx  # noqa: PLC0415

    width = next(
        d.dim_value for o in onnx.load(trunk).graph.output for d in o.type.tensor_type.shape.dim[1:2]
    ) or 1280
    raw = path.read_bytes()
    record = 32 + 4 * width
    return {raw[i : i + 32]: np.frombuffer(raw[i + 32 : i + record], "<f4") for i in range(0, len(raw) - record + 1, record)}


def features(files: list[tuple[Path, str]], known: dict[bytes, np.ndarray]) -> np.ndarray:
    return np.stack([known[hashlib.sha256(f.read_bytes()).digest()] for f, _ in files])


def held_out_camclassd(camclassd: str, model: Path, test: list[tuple[Path, str]]) -> float:
    out = subprocess.run(
        [camclassd, "classify", "--model", str(model), "--json", "--top", "1", *[str(f) for f, _ in test]],
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [json.loads(line)["top"][0]["label"] for line in out.stdout.splitlines()]
    return float(np.mean([a == label for a, (_, label) in zip(answers, test, strict=True)]))


def main() -> int:
    camclassd = sys.argv[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        for set_dir in sorted(p for p in SETS.iterdir() if p.is_dir()):
            test = pictures(set_dir / "test")
            # The test pictures embedded once (a training on them fills the cache; its model is not used).
            train(camclassd, set_dir / "test", tmp / "unused.onnx", cache)
            for n in SIZES:
                runs = []
                for draw in range(DRAWS):
                    folder = subset(set_dir, n, tmp, draw)
                    model = tmp / f"{set_dir.name}-{n}-{draw}.onnx"
                    report = train(camclassd, folder, model, cache)
                    known = embeddings(cache)
                    train_files = pictures(folder)
                    x, y = features(train_files, known), [c for _, c in train_files]
                    xt, yt = features(test, known), [c for _, c in test]
                    folds = max(2, min(5, min(y.count(c) for c in set(y))))
                    grid = GridSearchCV(
                        make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000)),
                        {"logisticregression__C": C_GRID},
                        cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                    ).fit(x, y)
                    sk = float(np.mean(grid.predict(xt) == np.array(yt)))
                    # Nearest class mean (SimpleShot): centred on the training mean, L2-normalised, cosine.
                    mu = x.mean(axis=0)
                    norm = lambda a: (a - mu) / np.linalg.norm(a - mu, axis=1, keepdims=True)  # noqa: E731
                    classes = sorted(set(y))
                    means = np.stack([norm(x)[np.array(y) == c].mean(axis=0) for c in classes])
                    ncm = float(np.mean(np.array(classes)[np.argmax(norm(xt) @ means.T, axis=1)] == np.array(yt)))
                    ours = held_out_camclassd(camclassd, model, test)
                    runs.append((report["cv_accuracy"], ours, sk, ncm))
                mean = np.mean(runs, axis=0)
                low = np.min(runs, axis=0)
                gap = float(np.mean([abs(cv - held) for cv, held, _, _ in runs]))
                rows.append((set_dir.name, n, *mean, *low[1:3], gap))
        # Speed: 200 pictures (the garage door's test split), cold and warm embedding cache.
        fresh = tmp / "fresh-cache"
        started = time.monotonic()
        train(camclassd, SETS / "garage/test", tmp / "speed.onnx", fresh)
        cold = time.monotonic() - started
        started = time.monotonic()
        train(camclassd, SETS / "garage/test", tmp / "speed.onnx", fresh)
        warm = time.monotonic() - started
    print(f"mean of {DRAWS} draws of the training pictures (lowest draw in brackets), on the held-out pictures")
    print(f"{'set':<8} {'n/class':>7} {'camclassd CV':>12} {'held out':>16} {'sklearn LR':>16} {'NCM':>6} {'|CV-held|':>9}")
    for name, n, cv, ours, sk, ncm, ours_low, sk_low, gap in rows:
        print(f"{name:<8} {n:>7} {cv:>12.3f} {ours:>8.3f} ({ours_low:.3f}) {sk:>8.3f} ({sk_low:.3f}) {ncm:>6.3f} {gap:>9.3f}")
    print(f"200 pictures, process start to model written: {cold:.2f} s cold, {warm:.2f} s warm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
