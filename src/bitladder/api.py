"""The public verbs: `encode` a model into a package, `open` a package."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .codecs.allocation import allocate, measure, signal
from .codecs.blocks import encode_tensor
from .codecs.entropy import DEFAULT_LEVEL
from .codecs.floatbits import to_f32
from .codecs.ladder import DEFAULT_LADDER, DEFAULT_MIN_SIZE, Ladder
from .codecs.plan import goes_up, plan_tensor
from .codecs.quality import QualityMeter
from .codecs.states import TensorSpec, is_float
from .delivery.choice import Budget
from .delivery.client import Download
from .errors import LineageError, UsageError
from .format.lineage import model_weights
from .format.reader import Package, StreamDecoder
from .format.signing import SigningKey, Trust, load_signing_key
from .format.spec import HEADER_SIZE, MAX_ALLOCATION, Manifest, Parent
from .format.writer import PackageWriter, Priorities
from .sources import SourceModel, SourceTensor, from_arrays, load_source

Progress = Callable[[int, int, str], None]
"""Called as progress(source_bytes_done, source_bytes_total, tensor_name)."""


def encode(
    source: str | os.PathLike[str] | SourceModel | Mapping[str, NDArray[np.generic]],
    output: str | os.PathLike[str],
    *,
    ladder: str | Ladder = DEFAULT_LADDER,
    group_size: int | None = None,
    min_size: int | None = None,
    model_id: str | None = None,
    model_version: str = "1",
    schedule: str = "source",
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
    priorities: Priorities | None = None,
    sign: str | os.PathLike[str] | SigningKey | None = None,
    sensitivity: Mapping[str, float] | None = None,
    calibration: str = "",
) -> Manifest:
    """Encode a model into a progressive package at `output`; returns its manifest.

    >>> manifest = encode("model.safetensors", "model.blad", ladder="int8,exact")   # doctest: +SKIP
    >>> manifest.rung_bytes()                                                       # doctest: +SKIP
    [20930000, 58500000]

    `ladder` is a comma-separated list of rungs (`group_size`, default 0: one scale per output channel, and
    `min_size`, default 4096, complete it) or a `Ladder`, which holds both itself: passing either with a
    `Ladder` is a `UsageError`, as is an unknown rung. `schedule="rd"` orders each rung's chunks by
    `priorities` ((tensor name, rung) -> value, highest first), e.g. from `bitladder.eval.rd.rd_priorities`.
    `sign` (a `.key` file from `bitladder keygen`, or a loaded key) signs the package. `sensitivity` (tensor
    name -> task distortion per unit of squared error, e.g. from `bitladder.eval.rd.sensitivities`) weights the
    allocation of a target first rung (`12%,int8,exact`) by what each tensor's error costs the task; without it
    every tensor's squared error counts alike (plain SQNR). `calibration` says what the sensitivity was measured
    on (recorded in the manifest, shown by `bitladder inspect`); it goes with `sensitivity`, which needs it.
    """
    ladder = _ladder(ladder, group_size, min_size)
    if sensitivity is not None and ladder.target is None:
        raise UsageError(f"sensitivity weights a target first rung, and ladder {','.join(ladder.names)} has none")
    if (sensitivity is None) != (not calibration):
        raise UsageError("sensitivity and calibration go together: give both (the weights and what they were "
                         "measured on) or neither")
    if len(calibration) > MAX_ALLOCATION - len("task: "):
        raise UsageError(f"calibration is {len(calibration)} characters; the manifest keeps at most "
                         f"{MAX_ALLOCATION - len('task: ')}")
    signing_key = load_signing_key(sign) if isinstance(sign, (str, os.PathLike)) else sign  # before the work
    if isinstance(source, SourceModel):
        model = source
    elif isinstance(source, Mapping):
        model = from_arrays(source)
    else:
        model = load_source(source)
    output = Path(output)
    if model_id is None:
        model_id = output.stem
    source_info = {"format": model.format, "digest": model.digest(), "metadata": model.metadata}
    widths = _allocate(model, ladder, level, sensitivity) if ladder.target is not None else {}
    writer = PackageWriter(output, model_id, model_version, source_info, ladder, schedule, priorities,
                           signing_key=signing_key)
    if ladder.target is not None:
        writer.allocation = "sqnr" if sensitivity is None else f"task: {calibration}"

    def coded(tensor: SourceTensor) -> Coded:
        spec = dataclasses.replace(tensor.spec, factor=widths[tensor.name]) if tensor.name in widths else tensor.spec
        return spec, None, encode_tensor(plan_tensor(spec, ladder), tensor.data, level)

    return _write(writer, model, ladder, coded, progress)


_MANIFEST_BYTES_PER_ENTRY = 40
"""A bound on one tensor's or chunk's share of the compressed manifest (MiniLM: 32 bytes, 12.5 KB for 104 tensors
and 279 chunks; MobileNetV2: 22), for a size target's budget before the manifest exists."""


def _allocate(model: SourceModel, ladder: Ladder, level: int, sensitivity: Mapping[str, float] | None) -> dict[
        str, int]:
    """Each laddered tensor's first-rung cell width under `ladder`'s target (`codecs/allocation.py`), weighted by
    `sensitivity` where given (then it must weigh every laddered tensor, by a finite number >= 0)."""
    if sensitivity is not None:
        laddered = [t.name for t in model.tensors.values() if goes_up(t.spec, ladder)]
        if missing := [name for name in laddered if name not in sensitivity]:
            raise UsageError(f"sensitivity lacks {len(missing)} of the {len(laddered)} laddered tensors, "
                             f"e.g. {', '.join(map(repr, missing[:3]))}")
        if bad := [name for name in laddered if not (math.isfinite(sensitivity[name]) and sensitivity[name] >= 0)]:
            raise UsageError(f"sensitivity of {bad[0]!r} is {sensitivity[bad[0]]!r}, not a finite number >= 0")
    assert ladder.target is not None
    curves, fixed, entries, exact_signal = [], HEADER_SIZE, 0, 0.0
    for tensor in model.tensors.values():
        if not goes_up(tensor.spec, ladder):  # exact in the first rung, as byte planes: small, so code them now
            fixed += sum(len(payload) for _, _, payload in encode_tensor(plan_tensor(tensor.spec, ladder), tensor.data,
                                                                 level))
            entries += 2
            if is_float(tensor.spec.dtype):
                exact_signal += signal(tensor.data.reshape(-1), tensor.spec.dtype)
            continue
        plan = plan_tensor(dataclasses.replace(tensor.spec, factor=1), ladder)
        curves.append(measure(plan, tensor.data, 1.0 if sensitivity is None else float(sensitivity[tensor.name])))
        entries += 1 + plan.blocks
    try:
        allocation = allocate(curves, ladder.target, model.nbytes, fixed + _MANIFEST_BYTES_PER_ENTRY * entries,
                              exact_signal)
    except ValueError as exc:
        raise UsageError(f"ladder {','.join(ladder.names)}: {exc}") from exc
    return allocation.widths


Coded = tuple[TensorSpec, NDArray[Any] | None, Iterable[tuple[int, int, bytes]]]
"""How one tensor goes into a package: its spec, the parent values it is coded against (or None), its payloads."""


def _write(writer: PackageWriter, model: SourceModel, ladder: Ladder, coded: Callable[[SourceTensor], Coded],
           progress: Progress | None) -> Manifest:
    """Every tensor of `model` into `writer`, with the SQNR per rung measured on the way (recorded in the manifest)."""
    total, done = model.nbytes, 0
    meter = QualityMeter(ladder)
    try:
        for tensor in model.tensors.values():
            spec, parent, payloads = coded(tensor)
            index, plan = writer.add_tensor(spec, tensor.data)
            probe = meter.tensor(plan, tensor.data, parent)
            for step, block, payload in payloads:
                writer.add_chunk(index, step, block, payload)
                probe.add(step, block, payload)
            done += tensor.spec.nbytes
            if progress is not None:
                progress(done, total, tensor.name)
        writer.quality = meter.quality()
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def _ladder(ladder: str | Ladder, group_size: int | None, min_size: int | None) -> Ladder:
    if isinstance(ladder, Ladder):
        given = [f"{name}={value!r}" for name, value in (("group_size", group_size), ("min_size", min_size))
                 if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} given with a Ladder object, which sets its own (min_size "
                             f"{ladder.min_size}); pass them to Ladder / Ladder.parse instead, or pass the ladder "
                             "as a string such as 'int8,exact'")
        return ladder
    if not isinstance(ladder, str):
        raise UsageError(f"ladder must be a string such as 'int8,exact' or a Ladder, not {type(ladder).__name__}")
    try:
        return Ladder.parse(ladder, group_size=0 if group_size is None else group_size,
                            min_size=DEFAULT_MIN_SIZE if min_size is None else min_size)
    except ValueError as exc:
        raise UsageError(f"ladder {ladder!r}: {exc} (a ladder is comma-separated rungs from int2..int8, bf16, "
                         "fp16, exact, each more precise than the one before, e.g. 'int4,int8,exact', or a target first rung "
                         "then intN[,exact], e.g. '12%,int8,exact' or '30dB,int8')") from exc


def open(source: str | os.PathLike[str] | bytes | bytearray | memoryview,  # noqa: A001
         max_bytes: int | None = None, *, trust: Trust | None = None, budget: Budget | None = None) -> Package | Download:
    """Open a package from a path or bytes (random access), or from an http(s) URL (a resuming stream).

    `max_bytes` refuses a package whose tensors would take more memory than that (a `ManifestError`); `trust`
    (`bitladder.load_trust("publisher.pub")`) one not signed by a trusted key (a `TrustError`), before any tensor.
    `budget` (URLs only) downloads only up to the highest rung that fits it; `download.choice` says which and why
    (`bitladder.delivery.choice`; for a file, `choose(package.manifest, budget)` gives the same answer).

    >>> package = bitladder.open("model.blad")                       # doctest: +SKIP
    >>> tensors = package.decode(rung=0)                              # doctest: +SKIP
    >>> download = bitladder.open("http://127.0.0.1:8000/models/minilm.blad")   # doctest: +SKIP
    >>> for update in download:                                       # doctest: +SKIP
    ...     print(update.name, download.decoder.rung)
    """
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return Download(source, sink=StreamDecoder(max_bytes=max_bytes, trust=trust), budget=budget)
    if budget is not None:
        raise UsageError("budget= chooses what to download, so it goes with an http(s) URL; for a file, "
                         "bitladder.delivery.choice.choose(package.manifest, budget) says which rung to decode")
    return Package.open(source, max_bytes, trust=trust)


def load_model(source: str | os.PathLike[str] | SourceModel | Mapping[str, NDArray[np.generic]],
               trust: Trust | None = None) -> tuple[SourceModel, Manifest | None]:
    """A model given as a file, a full package (decoded exact), a `SourceModel` or arrays; with the package's
    manifest (None for the others). What `diff`, `patch` and `fetch --base` take as weights."""
    if isinstance(source, SourceModel):
        return source, None
    if isinstance(source, Mapping):
        return from_arrays(source), None
    if Path(source).suffix != ".blad":
        return load_source(source), None
    package = Package.open(source, trust=trust)
    if package.manifest.parent is not None:
        raise UsageError(f"{source} is a delta package (of {package.manifest.parent.describe()}); apply it first "
                         "with bitladder patch and give the result")
    metadata = package.manifest.source.get("metadata") or {}
    return from_arrays(package.decode(), metadata), package.manifest


def diff(
    old: str | os.PathLike[str] | SourceModel | Mapping[str, NDArray[np.generic]],
    new: str | os.PathLike[str] | SourceModel | Mapping[str, NDArray[np.generic]],
    output: str | os.PathLike[str],
    *,
    version: str,
    model_id: str | None = None,
    parent_version: str | None = None,
    approximate_bits: int | None = 8,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
    sign: str | os.PathLike[str] | SigningKey | None = None,
    trust: Trust | None = None,
) -> Manifest:
    """A delta package at `output` that takes a device holding `old` to `new`: first an approximation of every
    changed tensor (to about `approximate_bits` bits of its own scale, as an int rung of that many bits; a change
    smaller than that waits; None: no approximate rung), then `new` bit-exact. Unchanged tensors cost nothing; a
    tensor that is new, changed shape, or is predicted poorly by its old version climbs an int ladder instead.

    `old` and `new` are model files, packages, `SourceModel`s or arrays. The delta's parent is `old`: its id and
    version come from `old`'s package, or from `model_id` and `parent_version` for a model file.

    >>> manifest = diff("v1.blad", "finetuned.safetensors", "v1-to-v2.blad", version="2")   # doctest: +SKIP
    >>> manifest.parent.version, manifest.rung_bytes()                                      # doctest: +SKIP
    ('1', [412000, 3100000])
    """
    signing_key = load_signing_key(sign) if isinstance(sign, (str, os.PathLike)) else sign
    old_model, old_manifest = load_model(old, trust)
    new_model, _ = load_model(new, trust)
    output = Path(output)
    parent_id = old_manifest.model_id if old_manifest else model_id or output.stem
    model_id = model_id or parent_id
    parent_version = old_manifest.model_version if old_manifest and parent_version is None else parent_version
    if parent_version is None:
        raise UsageError(f"the old model {old} is not a package: give the version it is (parent_version=, "
                         "--parent-version) so the delta can name its parent")
    if version == parent_version:
        raise UsageError(f"the new version {version!r} equals its parent's: give the update a version of its own")
    ladder = Ladder.parse("exact" if approximate_bits is None else f"delta{approximate_bits},exact")
    parent = Parent(parent_id, parent_version, model_weights(old_model))
    source_info = {"format": new_model.format, "digest": new_model.digest(), "metadata": new_model.metadata}
    writer = PackageWriter(output, model_id, version, source_info, ladder, parent=parent, signing_key=signing_key)

    def coded(tensor: SourceTensor) -> Coded:
        held = old_model.tensors.get(tensor.name)
        parent_data = held.data if held is not None and held.spec == tensor.spec else None
        spec, payloads = _cheaper_coding(tensor.spec, tensor.data, parent_data, ladder, level)
        return spec, parent_data if spec.delta else None, payloads

    return _write(writer, new_model, ladder, coded, progress)


FAR_BELOW_DB = 30.0
"""A changed tensor whose old version is further than this from the new (SQNR) is also coded without it, and the
cheaper coding wins: an old version that far off (a retrained head) predicts the new one poorly."""


def _sqnr_db(dtype: str, new: NDArray[Any], old: NDArray[Any]) -> float:
    """How close the old values are to the new (finite values only)."""
    with np.errstate(all="ignore"):  # NaNs and infinities are dropped below
        reference, test = to_f32(new, dtype).astype(np.float64), to_f32(old, dtype).astype(np.float64)
        finite = np.isfinite(reference) & np.isfinite(test)
        noise = float(np.sum((reference[finite] - test[finite]) ** 2))
        signal = float(np.sum(reference[finite] ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-300) / noise)


def _cheaper_coding(spec: TensorSpec, data: NDArray[Any], parent: NDArray[Any] | None, ladder: Ladder,
                    level: int) -> tuple[TensorSpec, list[tuple[int, int, bytes]]]:
    """The tensor's spec in the delta (coded against its parent or not) and its payloads."""
    def coded(delta: bool) -> tuple[TensorSpec, list[tuple[int, int, bytes]]]:
        marked = dataclasses.replace(spec, delta=delta)
        return marked, list(encode_tensor(plan_tensor(marked, ladder), data, level, parent if delta else None))

    if parent is None:
        return coded(False)
    against = coded(True)
    if not is_float(spec.dtype) or np.array_equal(parent, data) or _sqnr_db(spec.dtype, data, parent) >= FAR_BELOW_DB:
        return against
    alone = coded(False)
    return min(against, alone, key=lambda option: sum(len(payload) for _, _, payload in option[1]))


def patch(
    old: str | os.PathLike[str] | SourceModel | Mapping[str, NDArray[np.generic]],
    update: str | os.PathLike[str] | bytes,
    *,
    trust: Trust | None = None,
) -> tuple[Manifest, dict[str, NDArray[np.generic]]]:
    """Apply the delta package `update` to `old` (the weights it was made from): the new version's manifest and
    tensors, bit-exact (checked against the weights digest the delta records).

    >>> manifest, tensors = patch("v1.blad", "v1-to-v2.blad")          # doctest: +SKIP
    """
    old_model, _ = load_model(old, trust)
    package = Package.open(update, trust=trust)
    if not package.manifest.is_delta:
        raise UsageError(f"{getattr(package, 'name', update)} is a full package, not a delta: decode it instead")
    tensors = package.decode(parent=old_model)
    weights = model_weights(from_arrays(tensors))
    if weights != package.manifest.weights:  # every chunk verified, so only a codec defect can get here
        raise LineageError(f"patched weights {weights[:23]}… differ from version {package.manifest.model_version!r}'s "
                           f"{package.manifest.weights[:23]}…")
    return package.manifest, tensors
