#!/usr/bin/env python3
"""The INT8 evaluation set and its scoring: how close the INT8 model stays to the FP32 one, per CPU.

    int8_eval.py make [--out DIR]
        Writes the evaluation set: the evaluation photos of models/photos.py (never used for calibration),
        whole, mirrored and 55 augmentations each (crops, scales, flips, rotations, brightness, contrast,
        JPEG qualities 50-95) = 342 images, plus `subset.txt`, a fixed 1-in-5 subset (69 images) for the
        emulated CPUs, where an INT8 inference takes 0.5-1.6 s. Default DIR: tests/data/generated/int8-eval.
        Deterministic; files whose bytes would not change are left alone.

    int8_eval.py score --reference FP32.jsonl --candidate INT8.jsonl --platform NAME [--check]
        Reads two `camclassd classify --json --scores` outputs (the same images; the reference is the FP32
        model) and prints one line of figures: top-1 agreement, agreement on confident images (FP32
        p1 - p2 >= 0.2), FP32 top-1 within the INT8 top-5, mean and min cosine of the probability
        vectors. With --check, exits 1 when a target is missed:
            top-1 >= 92 %, confident 100 %, top-5 >= 99.5 %, mean cosine >= 0.99.
        With --same (one model on two CPUs), exits 1 unless every top-1 agrees and every cosine >= 0.9999.

Run with the project venv: .cache/venv/bin/python models/int8_eval.py ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "data" / "generated" / "int8-eval"
PER_PHOTO = 55
SEED = 20261202
SUBSET_EVERY = 5
CONFIDENT_MARGIN = 0.2

TARGETS = {"top1": 0.92, "confident": 1.0, "top5": 0.995, "cos_mean": 0.99}
# --same: the same model on another CPU (FP32 kernels differ in rounding only).
SAME_TARGETS = {"top1": 1.0, "cos_min": 0.9999}


def make(out: Path) -> int:
    sys.path.insert(0, str(ROOT / "models"))
    from photos import EVALUATION_PHOTOS, jpeg_bytes, variations  # noqa: PLC0415  (needs PIL and skimage)

    out.mkdir(parents=True, exist_ok=True)
    names, written = [], 0
    for name, img, quality in variations(EVALUATION_PHOTOS, PER_PHOTO, SEED):
        if quality is None:
            import io  # noqa: PLC0415

            buf = io.BytesIO()
            img.save(buf, "PNG")
            data, file = buf.getvalue(), f"{name}.png"
        else:
            data, file = jpeg_bytes(img, quality), f"{name}.jpg"
        path = out / file
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            written += 1
        names.append(file)
    wanted = set(names)
    for stale in out.iterdir():
        if stale.suffix in (".jpg", ".png") and stale.name not in wanted:
            stale.unlink()
    subset = "".join(f"{n}\n" for n in names[::SUBSET_EVERY])
    if not (out / "subset.txt").exists() or (out / "subset.txt").read_text() != subset:
        (out / "subset.txt").write_text(subset)
    print(f"{len(names)} evaluation images in {out} ({written} written), subset {len(names[::SUBSET_EVERY])}")
    return 0


def load_scores(path: Path) -> dict[str, list[float]]:
    scores = {}
    with path.open() as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if "scores" not in record:
                    raise SystemExit(f"{path}: no 'scores' in the record of {record.get('image')} (use --scores)")
                scores[Path(record["image"]).name] = record["scores"]
    return scores


def ranked(p: list[float]) -> list[int]:
    return sorted(range(len(p)), key=lambda i: (-p[i], i))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def figures(reference: dict[str, list[float]], candidate: dict[str, list[float]]) -> dict[str, float | int]:
    common = sorted(set(reference) & set(candidate))
    if not common:
        raise SystemExit("no image is in both score files")
    top1 = confident = confident_ok = top5 = 0
    cosines = []
    for image in common:
        ref, cand = reference[image], candidate[image]
        r, c = ranked(ref), ranked(cand)
        same = r[0] == c[0]
        top1 += same
        top5 += r[0] in c[:5]
        if ref[r[0]] - ref[r[1]] >= CONFIDENT_MARGIN:
            confident += 1
            confident_ok += same
        cosines.append(cosine(ref, cand))
    n = len(common)
    return {
        "images": n,
        "missing": len(set(reference) ^ set(candidate)),
        "top1": top1 / n,
        "confident": confident_ok / confident if confident else 1.0,
        "confident_ok": confident_ok,
        "confident_n": confident,
        "top5": top5 / n,
        "cos_mean": sum(cosines) / n,
        "cos_min": min(cosines),
    }


def score(args: argparse.Namespace) -> int:
    f = figures(load_scores(args.reference), load_scores(args.candidate))
    print(
        f"{args.platform:<28} {f['images']:>4} images  top-1 {f['top1']:6.1%}  "
        f"confident {f['confident_ok']}/{f['confident_n']}  FP32 top-1 in top-5 {f['top5']:6.1%}  "
        f"cosine mean {f['cos_mean']:.4f} min {f['cos_min']:.4f}"
    )
    if not (args.check or args.same):
        return 0
    targets = SAME_TARGETS if args.same else TARGETS
    missed = [f"{k} {f[k]:.4f} < {t}" for k, t in targets.items() if f[k] < t]
    if f["missing"]:
        missed.append(f"{f['missing']} images classified by only one of the two")
    if missed:
        print(f"{args.platform}: misses its targets: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the evaluation images")
    m.add_argument("--out", type=Path, default=DEFAULT_OUT)
    s = sub.add_parser("score", help="compare INT8 scores with FP32 scores")
    s.add_argument("--reference", type=Path, required=True, help="FP32 `classify --json --scores` output")
    s.add_argument("--candidate", type=Path, required=True, help="INT8 `classify --json --scores` output")
    s.add_argument("--platform", default="this machine", help="name printed on the line")
    s.add_argument("--check", action="store_true", help="exit 1 when an INT8 target is missed")
    s.add_argument("--same", action="store_true", help="exit 1 unless the two agree as one model on two CPUs")
    args = parser.parse_args()
    return make(args.out) if args.command == "make" else score(args)


if __name__ == "__main__":
    sys.exit(main())
