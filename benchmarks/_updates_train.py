"""Real model updates for benchmarks/updates.py: new versions of real models, trained here on CPU, reproducibly.

    python benchmarks/_updates_train.py [--cache-dir DIR] [--retrain]

Each pair is (OLD, NEW): two safetensors files with the same tensor names, dtypes and shapes (so the same header),
NEW made from OLD by real training on real data that ships in the installed wheels:

* ``minilm-full``: all-MiniLM-L6-v2, every parameter trained (AdamW with weight decay, as sentence-transformers'
  fit does) on the Lee corpus: a cosine-similarity regression of mean-pooled document embeddings onto the human
  similarity of the document pairs (Lee, Pincombe & Welsh 2005), documents 0-39 for training, the pairs that
  touch documents 40-49 held out.
* ``minilm-last2``: the same task with only the last two encoder layers trained; everything else frozen.
* ``minilm-lora``: a rank-8 LoRA on the attention query and value projections of all six layers, trained, then
  merged into those weights (``W + B @ A * alpha / rank``); only those twelve matrices change.
* ``mobilenetv2-head``: torchvision's ImageNet MobileNetV2 with its 1000-way classifier retrained (features frozen,
  batch-norm statistics untouched) to tell scikit-image's LFW faces from non-faces on outputs 0 and 1; same
  shapes, so the head keeps its 1000 rows and all of them move.
* ``minilm-last2-bf16``: ``minilm-last2``'s OLD and NEW both cast to bf16 (round to nearest even), a 16-bit source.

The pooler of MiniLM is not on the path of the mean-pooled embedding, so it gets no gradient and stays as it was
in every pair. Training is deterministic (fixed seeds, ``THREADS`` threads, deterministic algorithms) and cached
in ``cache_dir`` under a key hashed from the run's settings, so a rerun only reads the files. ``--retrain``
trains again into a scratch folder and compares the bytes of NEW with the cached file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from bitladder.eval import data, models  # noqa: E402

DEFAULT_CACHE = Path(__file__).parent / ".cache" / "updates"
THREADS = 2
# Bump when the training code changes in a way the settings below do not show; it is part of every cache key.
CODE_VERSION = 1
METADATA = {"format": "pt"}  # what the MiniLM wheel's file carries; NEW files keep it so OLD and NEW headers match
LEE_TRAIN_DOCS = 40  # Lee documents 0-39 train; every pair touching 40-49 is held out


@dataclass(frozen=True)
class Pair:
    """A real update: OLD and NEW safetensors files with the same names, dtypes and shapes.

    ``changed`` is the fraction of parameters (elements) whose bits differ between OLD and NEW; ``changed_tensors``
    how many tensors differ at all; ``train_s`` and ``train_cpu_s`` the wall and CPU time (all threads) of the
    training that made NEW, not of reading the cache.
    """

    name: str
    description: str
    old: Path
    new: Path
    note: str
    train_s: float
    train_cpu_s: float
    changed: float
    changed_tensors: int
    tensors: int
    quality: str


@dataclass(frozen=True)
class MiniLMRun:
    """A MiniLM fine-tune on Lee document pairs; ``mode`` picks what trains."""

    name: str
    description: str
    mode: Literal["full", "last", "lora"]
    steps: int = 200
    lr: float = 2e-5
    weight_decay: float = 0.01
    batch_docs: int = 6
    max_tokens: int = 128
    last_layers: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    seed: int = 0


@dataclass(frozen=True)
class MobileNetRun:
    """MobileNetV2's classifier retrained on LFW faces (output 1) vs non-faces (output 0); features frozen."""

    name: str
    description: str
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    held_out_per_class: int = 25
    seed: int = 0


@dataclass(frozen=True)
class CastRun:
    """Another run's OLD and NEW cast to a 16-bit float (round to nearest even)."""

    name: str
    description: str
    parent: MiniLMRun
    dtype: Literal["bfloat16", "float16"] = "bfloat16"


Run = MiniLMRun | MobileNetRun | CastRun

MINILM_LAST2 = MiniLMRun("minilm-last2", "all-MiniLM-L6-v2, last 2 of 6 encoder layers trained", "last", lr=5e-5)
RUNS: tuple[Run, ...] = (
    MiniLMRun("minilm-full", "all-MiniLM-L6-v2, every parameter fine-tuned", "full"),
    MINILM_LAST2,
    MiniLMRun("minilm-lora", "all-MiniLM-L6-v2, rank-8 LoRA on query/value merged", "lora", lr=3e-4, weight_decay=0.0),
    MobileNetRun("mobilenetv2-head", "MobileNetV2, classifier retrained (faces vs non-faces)"),
    CastRun("minilm-last2-bf16", "minilm-last2 cast to bf16 (OLD and NEW)", MINILM_LAST2),
)


def make_pairs(cache_dir: Path = DEFAULT_CACHE, names: Sequence[str] | None = None) -> list[Pair]:
    """Train (or read from ``cache_dir``) the pairs in ``RUNS`` (or those called ``names``), in ``RUNS`` order.

    >>> [p.name for p in make_pairs(names=["mobilenetv2-head"])]   # doctest: +SKIP
    ['mobilenetv2-head']
    """
    known = {run.name for run in RUNS}
    if names is not None and (unknown := sorted(set(names) - known)):
        raise ValueError(f"unknown pairs {', '.join(unknown)}: expected some of {', '.join(sorted(known))}")
    return [_cached_pair(run, Path(cache_dir)) for run in RUNS if names is None or run.name in names]


# --- cache -----------------------------------------------------------------------------------------------------------


def cache_key(run: Run) -> str:
    """12 hex digits of SHA-256 over the run's settings, the code version, torch's version and the thread count."""
    settings = {"run": asdict(run), "code": CODE_VERSION, "torch": torch.__version__, "threads": THREADS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _cached_pair(run: Run, cache_dir: Path) -> Pair:
    folder = cache_dir / f"{run.name}-{cache_key(run)}"
    if not (folder / "info.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{run.name}-", dir=cache_dir))
        try:
            _build(run, cache_dir, scratch)
            scratch.chmod(0o755)
            scratch.rename(folder)  # whole or absent: an interrupted run leaves no half-written entry
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _pair_from(run, folder, cache_dir)


def _pair_from(run: Run, folder: Path, cache_dir: Path) -> Pair:
    info = json.loads((folder / "info.json").read_text())
    old = folder / "old.safetensors" if isinstance(run, CastRun) else _base(run, cache_dir)
    return Pair(run.name, run.description, old, folder / "new.safetensors", info["note"], info["train_s"],
                info["train_cpu_s"], info["changed"], info["changed_tensors"], info["tensors"], info["quality"])


def _build(run: Run, cache_dir: Path, folder: Path) -> None:
    """Train ``run`` into ``folder``: new.safetensors (and old.safetensors for a cast) and info.json."""
    parent = _cached_pair(run.parent, cache_dir) if isinstance(run, CastRun) else None
    with _torch_settings(run):
        start, cpu = time.perf_counter(), time.process_time()
        if isinstance(run, CastRun):
            assert parent is not None
            trainable, quality, note = _cast_pair(run, parent, folder)
            old = folder / "old.safetensors"
        else:
            old = _base(run, cache_dir)
            train = _train_minilm if isinstance(run, MiniLMRun) else _train_mobilenet
            trainable, quality, note = train(run, load_file(old), folder / "new.safetensors")  # type: ignore[arg-type]
        train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    changed, changed_tensors, tensors = check_pair(old, folder / "new.safetensors", trainable)
    info = {"note": note, "train_s": train_s, "train_cpu_s": train_cpu_s, "changed": changed,
            "changed_tensors": changed_tensors, "tensors": tensors, "quality": quality, "settings": asdict(run),
            "key": cache_key(run),
            "new_sha256": hashlib.sha256((folder / "new.safetensors").read_bytes()).hexdigest()}
    (folder / "info.json").write_text(json.dumps(info, indent=1) + "\n")


@contextlib.contextmanager
def _torch_settings(run: Run) -> Iterator[None]:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    seed = run.parent.seed if isinstance(run, CastRun) else run.seed
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _base(run: Run, cache_dir: Path) -> Path:
    """The original model as a safetensors file in the cache (MiniLM: the wheel's file, copied byte for byte)."""
    name = "mobilenetv2" if isinstance(run, MobileNetRun) else "minilm"
    path = cache_dir / "base" / f"{name}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".partial")
        if name == "minilm":
            shutil.copyfile(models.minilm_dir() / "model.safetensors", scratch)
        else:
            save_file(torch.load(models.mobilenet_v2_weights(), map_location="cpu", weights_only=True), scratch, METADATA)
        scratch.rename(path)
    return path


# --- checks ----------------------------------------------------------------------------------------------------------


def _header(path: Path) -> bytes:
    with path.open("rb") as file:
        size = int.from_bytes(file.read(8), "little")
        return file.read(size)


def check_pair(old: Path, new: Path, trainable: set[str]) -> tuple[float, int, int]:
    """Fail unless OLD and NEW share one header (names, dtypes, shapes, offsets) and every tensor outside
    ``trainable`` is bit-identical; return (fraction of changed elements, changed tensors, tensors).
    """
    if _header(old) != _header(new):
        raise RuntimeError(f"{old} and {new} differ in their safetensors headers (names, dtypes, shapes or order)")
    before, after = load_file(old), load_file(new)
    changed = total = tensors = 0
    for name, a in before.items():
        differs = int((_bits(a) != _bits(after[name])).sum())
        if differs and name not in trainable:
            raise RuntimeError(f"{name} changed between {old.name} and {new.name} but was frozen")
        changed, total, tensors = changed + differs, total + a.numel(), tensors + bool(differs)
    return changed / total, tensors, len(before)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    view = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}.get(tensor.dtype)
    return tensor if view is None else tensor.view(view)


# --- MiniLM ----------------------------------------------------------------------------------------------------------


class LoRALinear(torch.nn.Module):
    """``base(x) + x @ Aᵀ @ Bᵀ * alpha / rank`` with ``base`` frozen; B starts at zero, so training starts at OLD."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.empty(rank, base.in_features))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        torch.nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + (x @ self.a.T @ self.b.T) * self.scale
        return out

    def merged(self) -> torch.nn.Linear:
        """``base`` with the adapter folded into its weight (fp32)."""
        with torch.no_grad():
            self.base.weight += (self.b @ self.a) * self.scale
        return self.base


def _minilm(state: dict[str, torch.Tensor]) -> Any:
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(models.minilm_dir() / "config.json"))
    model = BertModel(config, add_pooling_layer=True)
    expected = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    return model


def _embed(model: Any, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def _lee_spearman(model: Any, tokens: dict[str, torch.Tensor], human: np.ndarray) -> tuple[float, float]:
    """Spearman of cosine vs human similarity: train pairs (both documents < 40), held-out pairs (the rest)."""
    from scipy.stats import spearmanr

    model.eval()
    with torch.no_grad():
        vectors = _embed(model, tokens).numpy()
    model.train()
    rows, cols = np.triu_indices(len(human), 1)
    cosine, target = (vectors @ vectors.T)[rows, cols], human[rows, cols]
    train = cols < LEE_TRAIN_DOCS
    return (float(spearmanr(cosine[train], target[train]).statistic),
            float(spearmanr(cosine[~train], target[~train]).statistic))


def _trainable_minilm(run: MiniLMRun, model: Any) -> tuple[list[torch.nn.Parameter], set[str]]:
    """Freeze what ``run`` does not train; return the parameters to optimise and the names that may change."""
    names = dict(model.named_parameters())
    if run.mode == "full":
        return list(names.values()), set(names)
    for parameter in names.values():
        parameter.requires_grad_(False)
    if run.mode == "last":
        count = model.config.num_hidden_layers
        chosen = {n for n in names if any(n.startswith(f"encoder.layer.{i}.") for i in range(count - run.last_layers, count))}
        for name in chosen:
            names[name].requires_grad_(True)
        return [names[n] for n in sorted(chosen)], chosen
    adapters = []
    for layer in model.encoder.layer:
        for kind in ("query", "value"):
            adapter = LoRALinear(getattr(layer.attention.self, kind), run.lora_rank, run.lora_alpha)
            setattr(layer.attention.self, kind, adapter)
            adapters.append(adapter)
    chosen = {f"encoder.layer.{i}.attention.self.{k}.weight" for i in range(len(model.encoder.layer)) for k in ("query", "value")}
    return [p for a in adapters for p in (a.a, a.b)], chosen


def _merge_lora(model: Any) -> None:
    for layer in model.encoder.layer:
        for kind in ("query", "value"):
            module = getattr(layer.attention.self, kind)
            if isinstance(module, LoRALinear):
                setattr(layer.attention.self, kind, module.merged())


def _train_minilm(run: MiniLMRun, state: dict[str, torch.Tensor], new: Path) -> tuple[set[str], str, str]:
    from transformers import AutoTokenizer

    model = _minilm(state)
    model.train()  # dropout on, as in fine-tuning; seeded
    tokenizer = AutoTokenizer.from_pretrained(str(models.minilm_dir()), local_files_only=True)
    documents, human = data.lee_document_pairs()
    tokens = dict(tokenizer(documents, padding=True, truncation=True, max_length=run.max_tokens, return_tensors="pt"))
    before = _lee_spearman(model, tokens, human)
    parameters, trainable = _trainable_minilm(run, model)
    optimizer = torch.optim.AdamW(parameters, lr=run.lr, weight_decay=run.weight_decay)
    rng = np.random.default_rng(run.seed)
    target = torch.from_numpy(human.astype(np.float32))
    rows, cols = torch.triu_indices(run.batch_docs, run.batch_docs, 1)
    losses = []
    for _ in range(run.steps):
        batch = torch.from_numpy(np.sort(rng.choice(LEE_TRAIN_DOCS, run.batch_docs, replace=False)))
        vectors = _embed(model, {k: v[batch] for k, v in tokens.items()})
        cosine = (vectors @ vectors.T)[rows, cols]
        loss = torch.nn.functional.mse_loss(cosine, target[batch][:, batch][rows, cols])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    _merge_lora(model)
    after = _lee_spearman(model, tokens, human)
    trained = model.state_dict()
    save_file({name: trained.get(name, tensor).contiguous() for name, tensor in state.items()}, new, METADATA)
    what = {"full": "every parameter",
            "last": f"encoder layers {6 - run.last_layers}-5 only",
            "lora": f"rank-{run.lora_rank} LoRA (alpha {run.lora_alpha:g}) on query/value of all layers, merged"}[run.mode]
    note = (f"{what}; Lee docs 0-{LEE_TRAIN_DOCS - 1}, {run.batch_docs} docs ({run.batch_docs * (run.batch_docs - 1) // 2} "
            f"pairs) a step, MSE of cosine to human similarity, AdamW lr {run.lr:g} wd {run.weight_decay:g}, {run.steps} steps, "
            f"<= {run.max_tokens} tokens, seed {run.seed}; loss {np.mean(losses[:20]):.4f} -> {np.mean(losses[-20:]):.4f}")
    quality = (f"Lee Spearman train {before[0]:.3f} -> {after[0]:.3f}, held-out {before[1]:.3f} -> {after[1]:.3f}")
    return trainable, quality, note


# --- MobileNetV2 -----------------------------------------------------------------------------------------------------


def _lfw_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """LFW crops (grey 25x25) upscaled to 224x224 RGB, ImageNet-normalised; labels 1 = face, 0 = non-face."""
    images, faces = data.lfw_faces()
    grey = torch.nn.functional.interpolate(torch.from_numpy(images)[:, None], size=224, mode="bilinear", align_corners=False)
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    return (grey.expand(-1, 3, -1, -1) - mean) / std, torch.from_numpy(faces.astype(np.int64))


def _features(model: models.MobileNetV2, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        parts = [torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(images[i:i + 50]), 1), 1)
                 for i in range(0, len(images), 50)]
    return torch.cat(parts)


def _train_mobilenet(run: MobileNetRun, state: dict[str, torch.Tensor], new: Path) -> tuple[set[str], str, str]:
    model = models.MobileNetV2()
    model.load_state_dict(state, strict=True)
    model.eval()  # frozen features, batch-norm statistics kept
    images, labels = _lfw_batch()
    features = torch.cat([_features(model, images), _features(model, images.flip(-1))])  # photos, then their mirrors
    labels = torch.cat([labels, labels])
    per_class = len(images) // 2
    held_out = (torch.arange(len(labels)) % per_class) >= per_class - run.held_out_per_class
    head = model.classifier

    def accuracy() -> float:
        head.eval()
        with torch.no_grad():
            hits = head(features[held_out]).argmax(1) == labels[held_out]  # argmax over all 1000 outputs
        head.train()
        return float(hits.float().mean())

    before = accuracy()
    trainable = {f"classifier.1.{n}" for n, _ in head[1].named_parameters()}
    optimizer = torch.optim.AdamW(head.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    losses = []
    for _ in range(run.steps):  # full batch over the training features; dropout 0.2 of the head on
        loss = torch.nn.functional.cross_entropy(head(features[~held_out]), labels[~held_out])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    after = accuracy()
    trained = model.state_dict()
    save_file({name: trained[name].contiguous() for name in state}, new, METADATA)
    train_images = int((~held_out).sum()) // 2
    note = (f"classifier.1 (1000x1280 + 1000) only, features frozen; LFW subset, {train_images} crops + mirrors for training, "
            f"{run.held_out_per_class} per class held out; 224x224 grey->RGB; face = output 1, non-face = output 0 of the "
            f"1000; cross-entropy over all 1000, AdamW lr {run.lr:g} wd {run.weight_decay:g}, {run.steps} full-batch steps, "
            f"seed {run.seed}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    quality = f"held-out face/non-face accuracy (argmax of 1000) {100 * before:.0f}% -> {100 * after:.0f}%"
    return trainable, quality, note


# --- casts -----------------------------------------------------------------------------------------------------------


def _cast_pair(run: CastRun, parent: Pair, folder: Path) -> tuple[set[str], str, str]:
    dtype = getattr(torch, run.dtype)

    def cast(path: Path, out: Path) -> None:
        tensors = load_file(path)
        save_file({n: t.to(dtype) if t.is_floating_point() else t for n, t in tensors.items()}, out, METADATA)

    cast(parent.old, folder / "old.safetensors")
    cast(parent.new, folder / "new.safetensors")
    old, new = load_file(parent.old), load_file(parent.new)
    trainable = {n for n, t in old.items() if not torch.equal(_bits(t), _bits(new[n]))}
    note = f"{parent.name}'s OLD and NEW cast to {run.dtype} (torch .to, round to nearest even); no training of its own"
    return trainable, parent.quality + f" (of {parent.name}, in fp32)", note


# --- command line ----------------------------------------------------------------------------------------------------


def _retrain_check(runs: Sequence[Run], cache_dir: Path, report: Callable[[str], None]) -> bool:
    """Train each run again into a scratch cache; True when every NEW has the cached file's bytes."""
    same = True
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        for run in runs:
            cached, again = _cached_pair(run, cache_dir), _cached_pair(run, Path(scratch))
            equal = cached.new.read_bytes() == again.new.read_bytes()
            same &= equal
            report(f"{run.name}: retrained in {again.train_s:.0f} s, NEW {'identical' if equal else 'DIFFERENT'}")
    return same


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--pairs", default=None, help=f"comma-separated, from {', '.join(r.name for r in RUNS)}")
    parser.add_argument("--retrain", action="store_true", help="train again and compare NEW's bytes with the cache")
    args = parser.parse_args(argv)
    names = None if args.pairs is None else [n.strip() for n in args.pairs.split(",") if n.strip()]
    for pair in make_pairs(args.cache_dir, names):
        print(f"{pair.name}: {100 * pair.changed:.2f}% of parameters changed ({pair.changed_tensors}/{pair.tensors} tensors), "
              f"trained in {pair.train_s:.0f} s ({pair.train_cpu_s:.0f} s CPU); {pair.quality}", flush=True)
        print(f"  {pair.note}\n  {pair.old}\n  {pair.new}", flush=True)
    if args.retrain:
        runs = [r for r in RUNS if names is None or r.name in names]
        if not _retrain_check(runs, args.cache_dir, lambda line: print(line, flush=True)):
            sys.exit(1)


if __name__ == "__main__":
    main()
