"""MTCNN face detection (facenet-pytorch's P-, R- and O-Net and their bundled weights) as an eval task, torch only.

facenet-pytorch's package imports torchvision, which we never install: `mtcnn_module` loads the file
`facenet_pytorch/models/mtcnn.py` under a private package name whose `utils.detect_face` is a stub, and
`detect` is facenet-pytorch's `detect_face` rewritten in torch and numpy with our own NMS (the tests run
both on one image: same boxes within 1e-3 pixel). The weights ship in the wheel's `data/{pnet,rnet,onet}.pt`.

The pipeline, per RGB image of 0-255 values: an image pyramid (smallest face 20 pixels, factor 0.709);
P-Net over each scale (face probability >= 0.6, box regression), NMS 0.5 within a scale and 0.7 across
scales, boxes made square; R-Net on 24x24 crops (> 0.7, NMS 0.7, regression, square); O-Net on 48x48 crops
(> 0.7, regression, NMS 0.7 on the intersection over the smaller box). Crops are area-resampled as
facenet-pytorch's `interpolate(mode="area")`, from an integral image, so one gather cuts all crops of a
stage. Landmarks are not computed. A detection is (x1, y1, x2, y2, O-Net face probability), best first.

What the task measures (`bitladder.eval.tasks.mtcnn_task`): detections on group photos of real faces,
scikit-image's LFW face crops upscaled in a checkerboard with real background crops of the same photos
(`bitladder.eval.data.face_mosaic`; the true boxes are the face tiles), against the true faces (recall at
IoU >= 0.5, false positives) and against the fp32 detections (`box_set_score`, agreement, box IoU). Its
calibration photo adds scikit-image's `astronaut` (one face in a real scene).

>>> nets = mtcnn_nets(pretrained=True)                                                # doctest: +SKIP
>>> image, truth = bitladder.eval.data.face_mosaic(range(8), columns=4, side=56)      # doctest: +SKIP
>>> detect(nets, image).shape                                                         # doctest: +SKIP
(8, 5)
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

NETS = ("pnet", "rnet", "onet")
THRESHOLDS = (0.6, 0.7, 0.7)
MIN_FACE = 20
FACTOR = 0.709
MATCH_IOU = 0.5
"""A detection counts as a face (or as the same detection as fp32) at this IoU."""
MAX_BOXES = 128
MAX_CANDIDATES = 2000
"""P-Net windows kept per scale, and in all, before NMS: twice what the fp32 nets reach on a 100-face
mosaic; it bounds the time of a coarse rung whose P-Net passes every window (facenet-pytorch has no cap)."""
_PRIVATE = "_bitladder_facenet"
_CELL, _STRIDE = 12, 2  # P-Net's window and its step in the scaled image


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


# --- detection -------------------------------------------------------------------------------


def detect(nets: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Faces in one RGB image (H, W, 3) of 0-255 values: (K, 5) boxes x1, y1, x2, y2 and O-Net probability.

    `nets` is `mtcnn_nets` (or a module with its state). Boxes may reach past the image border.

    >>> detect(mtcnn_nets(pretrained=True), astronaut()).round()   # doctest: +SKIP
    array([[181.,  62., 268., 172.,   1.]])
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect needs an RGB image (H, W, 3), got shape {image.shape}")
    pixels = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()
    with torch.no_grad():
        boxes = _square(_propose(nets.get_submodule("pnet"), pixels))
        boxes, shifts = _classify(nets.get_submodule("rnet"), pixels, boxes, 24, THRESHOLDS[1])
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_regress(boxes[keep], shifts[keep]))
        boxes, shifts = _classify(nets.get_submodule("onet"), pixels, boxes, 48, THRESHOLDS[2])
        boxes = _regress(boxes, shifts)
        return np.asarray(boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, method="min")])


def pyramid_scales(height: int, width: int) -> list[float]:
    """The image scales P-Net runs at: the smallest face (20 pixels) becomes its 12-pixel window, then
    each scale is 0.709 of the one before while the short side stays >= 12 pixels.

    >>> [round(scale, 3) for scale in pyramid_scales(40, 60)]
    [0.6, 0.425, 0.302]
    """
    scales: list[float] = []
    scale = _CELL / MIN_FACE
    while min(height, width) * scale >= _CELL:
        scales.append(scale)
        scale *= FACTOR
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes (x1, y1, x2, y2), best score first.

    A box is dropped when its overlap with a kept, better box exceeds `threshold`. The overlap is the IoU
    ("union", as torchvision's `nms`) or the intersection over the smaller box ("min", as facenet-pytorch's
    `nms_numpy`, which counts pixels inclusively: +1 on each side).

    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    >>> nms(boxes, np.array([0.8, 0.9, 0.7]), 0.5).tolist()
    [1, 2]
    """
    if method not in ("union", "min"):
        raise ValueError(f"method must be 'union' or 'min', got {method!r}")
    pad = 1.0 if method == "min" else 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + pad) * (y2 - y1 + pad)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter = (np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + pad, 0, None)
                 * np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + pad, 0, None))
        base = np.minimum(area[best], area[rest]) if method == "min" else area[best] + area[rest] - inter
        order = rest[inter <= threshold * base]
    return np.asarray(keep, dtype=np.int64)


def _propose(pnet: torch.nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """P-Net's candidates over the pyramid: (N, 5) regressed boxes and face probabilities."""
    height, width = pixels.shape[2:]
    found = [np.zeros((0, 9))]
    for scale in pyramid_scales(height, width):
        scaled = torch.nn.functional.interpolate(pixels, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
        shifts, probs = pnet(_normalised(scaled))
        prob = probs[0, 1].numpy().astype(np.float64)
        rows, cols = np.nonzero(prob >= THRESHOLDS[0])
        corner = np.stack([cols, rows], axis=1).astype(np.float64)
        boxes = np.concatenate([np.floor((_STRIDE * corner + 1) / scale), np.floor((_STRIDE * corner + _CELL) / scale),
                                prob[rows, cols, None], shifts[0].numpy()[:, rows, cols].T], axis=1)
        boxes = _best(boxes, MAX_CANDIDATES)
        found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
    boxes = _best(np.concatenate(found), MAX_CANDIDATES)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    # P-Net's regression is relative to the exclusive size (facenet-pytorch), the later nets' to the inclusive
    size = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return np.concatenate([boxes[:, :4] + boxes[:, 5:9] * size, boxes[:, 4:5]], axis=1)


def _best(boxes: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` most probable boxes (all of them when there are fewer)."""
    return boxes if len(boxes) <= limit else boxes[np.argsort(-boxes[:, 4], kind="stable")[:limit]]


def _classify(net: torch.nn.Module, pixels: torch.Tensor, boxes: np.ndarray, side: int,
              threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The boxes whose `side` x `side` crop `net` scores above `threshold` (with that probability), and
    the net's box regression for each."""
    bounds = _bounds(boxes, pixels.shape[3], pixels.shape[2])
    inside = (bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1])
    if not inside.any():
        return np.zeros((0, 5)), np.zeros((0, 4))
    out = net(_normalised(_crops(pixels, bounds[inside], side)))
    prob, shifts = out[-1][:, 1].numpy().astype(np.float64), out[0].numpy().astype(np.float64)
    keep = prob > threshold
    return np.concatenate([boxes[inside][keep, :4], prob[keep, None]], axis=1), shifts[keep]


def _bounds(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) integer pixel ranges [x0, y0, x1, y1) of the boxes, clipped to the image (facenet's `pad`)."""
    corners = np.trunc(boxes[:, :4]).astype(np.int64)
    low = np.maximum(corners[:, :2], 1) - 1
    high = np.minimum(corners[:, 2:], [width, height])
    return np.concatenate([low, high], axis=1)


def _crops(pixels: torch.Tensor, bounds: np.ndarray, side: int) -> torch.Tensor:
    """(N, 3, side, side): each range area-resampled, as `interpolate(crop, mode="area")` would, from an
    integral image (exact: the pixels are integers) so that one gather cuts every crop."""
    integral = torch.nn.functional.pad(pixels[0].double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    x0, y0, x1, y1 = (torch.from_numpy(bounds[:, i]).unsqueeze(1) for i in range(4))
    cell = torch.arange(side)

    def edges(start: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # adaptive average pooling: output cell i covers [floor(i * n / side), ceil((i + 1) * n / side))
        return (start + torch.div(cell * length, side, rounding_mode="floor"),
                start + torch.div((cell + 1) * length + side - 1, side, rounding_mode="floor"))

    top, bottom = (e.unsqueeze(2) for e in edges(y0, y1 - y0))
    left, right = (e.unsqueeze(1) for e in edges(x0, x1 - x0))
    total = integral[:, bottom, right] - integral[:, top, right] - integral[:, bottom, left] + integral[:, top, left]
    return (total / ((bottom - top) * (right - left))).permute(1, 0, 2, 3).float()


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125


def _regress(boxes: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """R- and O-Net's box regression (facenet's `bbreg`), relative to the inclusive box size."""
    size = np.tile(boxes[:, 2:4] - boxes[:, 0:2] + 1, 2)
    return np.concatenate([boxes[:, :4] + shifts * size, boxes[:, 4:]], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square on its longer side, same centre (facenet's `rerec`)."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(axis=1, keepdims=True, initial=0.0)
    corner = boxes[:, 0:2] + size * 0.5 - side * 0.5
    return np.concatenate([corner, corner + side, boxes[:, 4:]], axis=1)


# --- answers and measures --------------------------------------------------------------------


def padded(boxes: np.ndarray, rows: int = MAX_BOXES) -> np.ndarray:
    """A fixed-size answer: (rows, 5) float32, the best `rows` detections then zero rows (probability 0
    marks padding; a detection's probability is above 0.7).

    >>> padded(np.ones((2, 5)), rows=3)[:, 4].tolist()
    [1.0, 1.0, 0.0]
    """
    out = np.zeros((rows, 5), np.float32)
    out[:min(rows, len(boxes))] = boxes[:rows]
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) boxes (x1, y1, x2, y2); 0 where a box is empty or inverted.

    >>> box_iou(np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 0, 15, 10]])).round(3).tolist()
    [0.333]
    """
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height

    def area(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None))

    union = area(a) + area(b) - inter
    return np.asarray(np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0), dtype=np.float64)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M): IoU of each of the N boxes `a` with each of the M boxes `b`."""
    return box_iou(np.repeat(a[:, :4], len(b), axis=0), np.tile(b[:, :4], (len(a), 1))).reshape(len(a), len(b))


def box_set_score(reference: np.ndarray, answer: np.ndarray) -> float:
    """How well detections `answer` reproduce `reference` (padded or not), in [0, 1], 1.0 when identical:
    each reference box's best IoU with an answer box, summed, over the number of reference boxes plus the
    answer boxes that overlap no reference box (IoU < 0.5). Moves smoothly with the boxes.

    >>> ref = np.array([[0.0, 0, 10, 10, 0.9]])
    >>> shifted_and_extra = np.array([[1.0, 0, 11, 10, 0.9], [50, 50, 60, 60, 0.8]])  # IoU 90 / 110, one extra
    >>> box_set_score(ref, ref), round(box_set_score(ref, shifted_and_extra), 3)
    (1.0, 0.409)
    """
    ref, ans = reference[reference[:, 4] > 0], answer[answer[:, 4] > 0]
    if not len(ref):
        return 1.0 / (1 + len(ans))
    iou = pairwise_iou(ref, ans)
    extra = int((iou.max(axis=0, initial=0.0) < MATCH_IOU).sum())
    return float(iou.max(axis=1, initial=0.0).sum() / (len(ref) + extra))


def detection_metrics(answers: Sequence[np.ndarray], references: Sequence[np.ndarray],
                      truths: Sequence[np.ndarray]) -> dict[str, float]:
    """Detections on a set of images against the true faces and against fp32's detections.

    recall: true faces with a detection at IoU >= 0.5; false_positives: detections at IoU < 0.5 with every
    true face; boxes: detections; fp32_agreement: detections (of both) with a partner in the other set at
    IoU >= 0.5, over all; box_iou_fp32: mean IoU of those fp32 boxes with their best partner;
    score_fp32: mean `box_set_score` per image.
    """
    counts = dict.fromkeys(("faces", "found", "false", "boxes", "fp32_boxes", "agree"), 0)
    ious: list[float] = []
    for answer, reference, truth in zip(answers, references, truths, strict=True):
        mine, theirs = answer[answer[:, 4] > 0], reference[reference[:, 4] > 0]
        to_truth, to_fp32 = pairwise_iou(truth, mine), pairwise_iou(theirs, mine)
        best = to_fp32.max(axis=1, initial=0.0)
        ious += best[best >= MATCH_IOU].tolist()
        counts["faces"] += len(truth)
        counts["found"] += int((to_truth.max(axis=1, initial=0.0) >= MATCH_IOU).sum())
        counts["false"] += int((to_truth.max(axis=0, initial=0.0) < MATCH_IOU).sum())
        counts["boxes"] += len(mine)
        counts["fp32_boxes"] += len(theirs)
        counts["agree"] += int((best >= MATCH_IOU).sum() + (to_fp32.max(axis=0, initial=0.0) >= MATCH_IOU).sum())
    return {"recall": counts["found"] / max(counts["faces"], 1), "false_positives": float(counts["false"]),
            "boxes": float(counts["boxes"]),
            "fp32_agreement": counts["agree"] / max(counts["boxes"] + counts["fp32_boxes"], 1),
            "box_iou_fp32": float(np.mean(ious)) if ious else 0.0,
            "score_fp32": float(np.mean([box_set_score(r, a) for r, a in zip(references, answers, strict=True)]))}
