"""MTCNN (facenet-pytorch's P-, R- and O-Net and their bundled weights) as an eval task, torch only.

facenet-pytorch's package imports torchvision, which we never install: `mtcnn_module` loads the file
`facenet_pytorch/models/mtcnn.py` under a private package name whose `utils.detect_face` is a stub (it only
serves the detection pipeline). The weights ship in the wheel's `data/{pnet,rnet,onet}.pt`.

Simplification of detection, documented: the inputs are scikit-image's LFW subset, 25x25 crops that are
either a face or background, too small for MTCNN's image pyramid (its 12-pixel P-Net window would see the
whole crop at one or two scales). So each crop is one candidate window run through the cascade: P-Net at
12x12, R-Net at 24x24, O-Net at 48x48 (bilinear resize, grey to three channels, MTCNN's (x - 127.5) / 128),
detected when the three face probabilities pass facenet-pytorch's thresholds (0.6, 0.7, 0.7), and the box
is O-Net's regression applied to the crop (as its `bbreg`). No NMS: one window per image.

>>> nets = mtcnn_nets(pretrained=True)                   # doctest: +SKIP
>>> cascade(nets, torch.zeros(2, 25, 25)).shape          # doctest: +SKIP
torch.Size([2, 7])
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

NETS = ("pnet", "rnet", "onet")
THRESHOLDS = (0.6, 0.7, 0.7)
_SIDES = (12, 24, 48)
_PRIVATE = "_bitladder_facenet"


def wheel_dir() -> Path:
    """The installed facenet_pytorch folder (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    return Path(next(iter(spec.submodule_search_locations)))


def mtcnn_module() -> Any:
    """facenet-pytorch's `models/mtcnn.py`, loaded without its torchvision-bound package."""
    if f"{_PRIVATE}.models.mtcnn" in sys.modules:
        return sys.modules[f"{_PRIVATE}.models.mtcnn"]
    root = wheel_dir()
    for package, path in ((_PRIVATE, root), (f"{_PRIVATE}.models", root / "models"),
                          (f"{_PRIVATE}.models.utils", root / "models" / "utils")):
        module = types.ModuleType(package)
        module.__path__ = [str(path)]
        sys.modules[package] = module
    stub = types.ModuleType(f"{_PRIVATE}.models.utils.detect_face")
    stub.detect_face = stub.extract_face = None  # type: ignore[attr-defined]
    sys.modules[stub.__name__] = stub
    spec = importlib.util.spec_from_file_location(f"{_PRIVATE}.models.mtcnn", root / "models" / "mtcnn.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{root / 'models' / 'mtcnn.py'} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def mtcnn_net(kind: str, pretrained: bool) -> torch.nn.Module:
    """`pnet`, `rnet` or `onet`, with the wheel's weights or untrained (for weights from a stream)."""
    cls = {"pnet": "PNet", "rnet": "RNet", "onet": "ONet"}[kind]
    net: torch.nn.Module = getattr(mtcnn_module(), cls)(pretrained=pretrained)
    return net.eval()


def weights_path(kind: str) -> Path:
    return wheel_dir() / "data" / f"{kind}.pt"


def mtcnn_nets(pretrained: bool) -> torch.nn.ModuleDict:
    """The three nets in one module: state dict keys `pnet.conv1.weight`, ..., `onet.dense6_3.bias`."""
    return torch.nn.ModuleDict({kind: mtcnn_net(kind, pretrained) for kind in NETS}).eval()


def cascade(nets: torch.nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """(N, 7) per crop: P-, R-, O-Net face probability, then the O-Net box (x1, y1, x2, y2) in crop pixels."""
    side = crops.shape[-1]
    pixels = (crops.unsqueeze(1).expand(-1, 3, -1, -1) * 255.0 - 127.5) * 0.0078125
    probs = []
    with torch.no_grad():
        for kind, size in zip(NETS, _SIDES, strict=True):
            window = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
            out = nets[kind](window)  # type: ignore[index]
            probs.append(out[-1].reshape(len(crops), 2)[:, 1])
        box = out[0].reshape(len(crops), 4) * side + torch.tensor([0.0, 0.0, side, side])
    return torch.cat([torch.stack(probs, dim=1), box], dim=1)


def detected(answer: np.ndarray) -> np.ndarray:
    """Which crops pass all three thresholds."""
    return np.asarray(np.all(answer[:, :3] > np.asarray(THRESHOLDS), axis=1), dtype=bool)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) boxes (x1, y1, x2, y2); 0 where a box is empty or inverted."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height

    def area(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None))

    union = area(a) + area(b) - inter
    return np.asarray(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0), dtype=np.float64)


def cascade_metrics(answer: np.ndarray, reference: np.ndarray, faces: np.ndarray) -> dict[str, float]:
    """Detection rate on faces, false positives on background, agreement and box IoU with fp32."""
    mine, theirs = detected(answer), detected(reference)
    both = mine & theirs & faces
    return {"detection_rate": float(mine[faces].mean()), "false_positive_rate": float(mine[~faces].mean()),
            "decision_agreement_fp32": float((mine == theirs).mean()),
            "box_iou_fp32": float(box_iou(answer[both, 3:], reference[both, 3:]).mean()) if both.any() else 0.0,
            "onet_prob_mae_fp32": float(np.abs(answer[:, 2] - reference[:, 2]).mean())}
