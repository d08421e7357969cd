"""The public verbs: `encode` a model into a package, `open` a package."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .codecs.blocks import encode_tensor
from .codecs.entropy import DEFAULT_LEVEL
from .codecs.ladder import DEFAULT_LADDER, DEFAULT_MIN_SIZE, Ladder
from .delivery.client import Download
from .errors import UsageError
from .format.reader import Package, StreamDecoder
from .format.spec import Manifest
from .format.writer import PackageWriter, Priorities
from .sources import SourceModel, from_arrays, load_source

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
) -> Manifest:
    """Encode a model into a progressive package at `output`; returns its manifest.

    >>> manifest = encode("model.safetensors", "model.blad", ladder="int8,exact")   # doctest: +SKIP
    >>> manifest.rung_bytes()                                                       # doctest: +SKIP
    [20930000, 58500000]

    `ladder` is a comma-separated list of rungs (`group_size`, default 0: one scale per output channel, and
    `min_size`, default 4096, complete it) or a `Ladder`, which holds both itself: passing either with a
    `Ladder` is a `UsageError`, as is an unknown rung. `schedule="rd"` orders each rung's chunks by
    `priorities` ((tensor name, rung) -> value, highest first), e.g. from `bitladder.eval.rd.rd_priorities`.
    """
    ladder = _ladder(ladder, group_size, min_size)
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
    writer = PackageWriter(output, model_id, model_version, source_info, ladder, schedule, priorities)
    total, done = model.nbytes, 0
    try:
        for tensor in model.tensors.values():
            index, plan = writer.add_tensor(tensor.spec)
            for step, block, payload in encode_tensor(plan, tensor.data, level):
                writer.add_chunk(index, step, block, payload)
            done += tensor.spec.nbytes
            if progress is not None:
                progress(done, total, tensor.name)
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
                         "fp16, exact, each more precise than the one before, e.g. 'int4,int8,exact')") from exc


def open(source: str | os.PathLike[str] | bytes | bytearray | memoryview,  # noqa: A001
         max_bytes: int | None = None) -> Package | Download:
    """Open a package from a path or bytes (random access), or from an http(s) URL (a resuming stream).

    `max_bytes` refuses a package whose tensors would take more memory than that (a `ManifestError`).

    >>> package = bitladder.open("model.blad")                       # doctest: +SKIP
    >>> tensors = package.decode(rung=0)                              # doctest: +SKIP
    >>> download = bitladder.open("http://127.0.0.1:8000/models/minilm.blad")   # doctest: +SKIP
    >>> for update in download:                                       # doctest: +SKIP
    ...     print(update.name, download.decoder.rung)
    """
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return Download(source, sink=StreamDecoder(max_bytes=max_bytes))
    return Package.open(source, max_bytes)
