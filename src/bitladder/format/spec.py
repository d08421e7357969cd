"""The package format (docs/FORMAT.md is normative; this module is its executable form).

    offset   size  field
    0        4     magic b"BLAD"
    4        2     format version, u16 little-endian (2)
    6        2     flags, u16 (bit 0: signed; any other bit is refused)
    8        8     manifest length M in bytes, u64 little-endian (8 <= M <= 64 MiB)
    16       32    BLAKE3 digest (32 bytes) of the M manifest bytes
    48       32    signer's Ed25519 public key (signed), else zeros
    80       64    Ed25519 signature of SIGNED_CONTEXT + bytes 0-47 (signed), else zeros
    144      M     manifest: one zstd frame (content size declared, <= 64 MiB) of a UTF-8 JSON object
    144 + M  ...   chunks back to back, in manifest order; together exactly `data_length` bytes

Chunk digests are "blake3:" + the 64 hex digits of the BLAKE3 digest of the chunk bytes. The signature covers
the manifest digest, and the manifest every chunk digest, so it binds every byte (`format.signing` checks it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import re
import reprlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import blake3
import numpy as np
import zstandard
from numpy.typing import NDArray

from .._memo import cached
from ..codecs.ladder import Ladder
from ..codecs.plan import TensorPlan, plan_tensor
from ..codecs.states import STORAGE, TensorSpec
from ..errors import BadMagicError, ManifestError, UnsupportedVersionError, UsageError

MAGIC: Final = b"BLAD"
VERSION: Final = 2
HEADER_SIZE: Final = 144
SIGNED_SIZE: Final = 48  # header bytes 0-47: what a signature covers
PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
FLAG_SIGNED: Final = 0x0001
SIGNED_CONTEXT: Final = b"bitladder signed package v2\x00"  # prefixed to the signed bytes (domain separation)
MAX_MANIFEST_SIZE: Final = 64 * 1024 * 1024  # bytes, both of the frame and of the JSON it holds
# Names and digests: level 3 took the manifests measured to 28-39 % of their JSON (MobileNetV2, MiniLM), and to 4 %
# where most chunks are empty (a delta); level 19 saved 2-11 % more, slowly. The window bound caps what a hostile
# frame header can make the reader reserve.
MANIFEST_LEVEL: Final = 3
MANIFEST_WINDOW: Final = 1 << 23
MAX_TENSORS: Final = 1_000_000
MAX_RANK: Final = 16
DIGEST_NAME: Final = "blake3"
DIGEST_PREFIX: Final = DIGEST_NAME + ":"
DIGEST_HEX: Final = 64  # hex digits after the prefix (a 32-byte BLAKE3 digest)
_HEADER: Final = struct.Struct("<4sHHQ32s32s64s")
_NO_SIGNATURE: Final = bytes(PUBLIC_KEY_SIZE + SIGNATURE_SIZE)
_VERSION_PART: Final = re.compile(r"\d+|\D+")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """The sort key of a model version: its runs of digits compare as numbers, other runs as text.

    >>> sorted(["1.10", "1.9", "1.9a", "2"], key=version_key)
    ['1.9', '1.9a', '1.10', '2']
    """
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _VERSION_PART.findall(version))


class ChunkHasher:
    """The chunk digest computed incrementally: `update` with the bytes in order, then `digest()`.

    BLAKE3 hashes many 1 KiB chunks at once only when an update starts on a wide boundary of its input, so
    bytes are handed to it in whole blocks of `_BLOCK` (fewer than `_BLOCK` bytes wait here); pieces cut
    anywhere would otherwise hash several times slower.

    >>> hasher = ChunkHasher()
    >>> hasher.update(b"ab"); hasher.update(b"c")
    >>> hasher.digest() == digest(b"abc")
    True
    """

    _BLOCK: Final = 64 * 1024

    def __init__(self) -> None:
        self._state = blake3.blake3()
        self._staged = bytearray()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._staged:
            take = min(self._BLOCK - len(self._staged), len(view))
            self._staged += view[:take]
            view = view[take:]
            if len(self._staged) < self._BLOCK:
                return
            self._state.update(self._staged)
            self._staged.clear()
        whole = len(view) - len(view) % self._BLOCK
        if whole:
            self._state.update(view[:whole])
        self._staged += view[whole:]

    def digest(self) -> str:
        """The digest string of every byte given since construction or the last `reset`."""
        self._state.update(self._staged)
        self._staged.clear()
        return DIGEST_PREFIX + self._state.hexdigest()

    def reset(self) -> None:
        self._state.reset()
        self._staged.clear()


def digest(data: bytes | bytearray | memoryview) -> str:
    """The chunk digest string the manifest records.

    >>> digest(b"")[:15]
    'blake3:af1349b9'
    """
    return DIGEST_PREFIX + blake3.blake3(data).hexdigest()  # whole bytes: nothing to stage (see ChunkHasher)


def manifest_digest(body: bytes | bytearray | memoryview) -> bytes:
    """The 32 bytes the header records for the manifest `body`: its BLAKE3 digest."""
    return blake3.blake3(body).digest()


@dataclass(frozen=True)
class Header:
    """The fixed `HEADER_SIZE` bytes that open a package; `public_key` and `signature` are None when unsigned."""

    manifest_length: int
    manifest_digest: bytes
    public_key: bytes | None = None
    signature: bytes | None = None

    def __post_init__(self) -> None:
        if (self.public_key is None) != (self.signature is None):
            raise UsageError("a header has both a public key and a signature, or neither")
        if self.public_key is not None and self.signature is not None and \
                (len(self.public_key), len(self.signature)) != (PUBLIC_KEY_SIZE, SIGNATURE_SIZE):
            raise UsageError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes and a signature {SIGNATURE_SIZE}, "
                             f"not {len(self.public_key)} and {len(self.signature)}")

    @property
    def signed(self) -> bool:
        return self.public_key is not None

    def signed_message(self) -> bytes:
        """What the signature signs: `SIGNED_CONTEXT` + header bytes 0-47 (magic to manifest digest)."""
        return SIGNED_CONTEXT + self.pack()[:SIGNED_SIZE]

    def pack(self) -> bytes:
        flags = FLAG_SIGNED if self.signed else 0
        return _HEADER.pack(MAGIC, VERSION, flags, self.manifest_length, self.manifest_digest,
                            self.public_key or bytes(PUBLIC_KEY_SIZE), self.signature or bytes(SIGNATURE_SIZE))

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Header:
        """Parse and check the fixed `HEADER_SIZE` bytes at the start of a package."""
        magic = bytes(data[:len(MAGIC)])
        if len(magic) == len(MAGIC) and magic != MAGIC:  # a short file that is no package says so first
            raise BadMagicError(f"bytes 0-3 are {magic!r}, not the bitladder magic {MAGIC!r}")
        if len(data) < HEADER_SIZE:
            raise BadMagicError(f"package shorter than its {HEADER_SIZE}-byte header ({len(data)} bytes)")
        _, version, flags, length, manifest_digest, key, signature = _HEADER.unpack(bytes(data[:HEADER_SIZE]))
        if version != VERSION:
            raise UnsupportedVersionError(f"format version {version} at offset 4; this library reads {VERSION}")
        if flags & ~FLAG_SIGNED:
            raise UnsupportedVersionError(f"unknown flags {flags:#06x} at offset 6 (known: {FLAG_SIGNED:#06x}, signed)")
        if not 8 <= length <= MAX_MANIFEST_SIZE:
            raise ManifestError(f"manifest length {length} at offset 8 is not in [8, {MAX_MANIFEST_SIZE}]")
        if flags & FLAG_SIGNED:
            return cls(length, manifest_digest, key, signature)
        if key + signature != _NO_SIGNATURE:
            raise ManifestError(f"bytes {SIGNED_SIZE}-{HEADER_SIZE - 1} of an unsigned package (flags 0 at offset 6) "
                                "are not all zero")
        return cls(length, manifest_digest)


class WeightsHasher:
    """The digest of a model's exact weights, which a manifest records (`model.weights`) and a delta names as its
    parent's. Each tensor's digest is BLAKE3 over its name, dtype and shape (UTF-8, each ended by a NUL; the shape
    as decimal sides joined by ",") and then its bytes (little-endian storage); the weights digest is BLAKE3 over
    the tensors in name order (UTF-8 bytes), each as its name, a NUL and its 32-byte digest. A device computes it
    from the weights it holds, in any order, whatever package or file they came from.

    >>> hasher = WeightsHasher()
    >>> hasher.add(TensorSpec("w", "F32", (2,)), np.zeros(2, np.uint32))
    >>> hasher.digest()[:15]
    'blake3:5f7cadab'
    """

    def __init__(self) -> None:
        self._tensors: dict[str, bytes] = {}

    def add(self, spec: TensorSpec, storage: NDArray[Any]) -> None:
        if storage.nbytes != spec.nbytes:
            raise ValueError(f"tensor {spec.name!r}: {storage.nbytes} bytes given for {spec.nbytes}")
        if spec.name in self._tensors:
            raise ValueError(f"tensor {spec.name!r} hashed twice")
        hasher = blake3.blake3(f"{spec.name}\0{spec.dtype}\0{','.join(map(str, spec.shape))}\0".encode())
        hasher.update(np.ascontiguousarray(storage).reshape(-1).view(np.uint8).data)
        self._tensors[spec.name] = hasher.digest()

    def digest(self) -> str:
        hasher = blake3.blake3()
        for name in sorted(self._tensors, key=lambda n: n.encode()):
            hasher.update(name.encode() + b"\0" + self._tensors[name])
        return DIGEST_PREFIX + hasher.hexdigest()


def weights_digest(tensors: Iterable[tuple[TensorSpec, NDArray[Any]]]) -> str:
    """`WeightsHasher` over (spec, storage) pairs in order."""
    hasher = WeightsHasher()
    for spec, storage in tensors:
        hasher.add(spec, storage)
    return hasher.digest()


@dataclass(frozen=True)
class Parent:
    """What a delta package updates: the model id and version, the digest of its exact weights, and the rung of
    it the delta applies to (always its exact rung: deltas are coded against the old exact weights)."""

    model_id: str
    version: str
    weights: str
    rung: str = "exact"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.model_id, "version": self.version, "weights": self.weights[len(DIGEST_PREFIX):],
                "rung": self.rung}

    def describe(self) -> str:
        return f"{self.model_id!r} version {self.version!r} ({self.weights[:23]}…)"


@dataclass(frozen=True)
class ChunkEntry:
    """Where one chunk lies (relative to the data start): one block of one tensor moving up one rung.

    Only tensor, block, rung, length and digest are stored; `step` (the plan step it carries) and `reaches` follow
    from the tensor's plan, `offset` from the chunks before it."""

    tensor: int
    block: int
    rung: int
    reaches: int
    step: int
    offset: int
    length: int
    digest: str

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> list[Any]:
        return [self.tensor, self.block, self.rung, self.length, self.digest[len(DIGEST_PREFIX):]]


@dataclass(frozen=True)
class Manifest:
    """Everything a decoder needs before the first chunk arrives."""

    model_id: str
    model_version: str
    source: dict[str, Any]
    ladder: Ladder
    schedule: str
    tensors: tuple[TensorSpec, ...]
    chunks: tuple[ChunkEntry, ...]
    weights: str = ""
    """`WeightsHasher` digest of the exact weights (the last rung's), "blake3:" + 64 hex digits."""
    parent: Parent | None = None
    """What a delta package updates; None for a full package."""
    quality: tuple[float | None, ...] = ()
    """Per rung, the SQNR in dB of the laddered tensors measured at encode time (None: exact, or not measured)."""
    allocation: str = ""
    """What a target first rung's cell widths (`TensorSpec.factor`) were allocated by: "sqnr" (every tensor's
    squared error alike), or "task: " and the calibration set its sensitivities were measured on; "" without one."""

    def __post_init__(self) -> None:
        if (self.parent is None) != (self.ladder.delta is None and not any(t.delta for t in self.tensors)):
            raise ManifestError(f"package {self.model_id!r}: a parent is recorded exactly when the package is a delta "
                                "(a delta ladder or delta tensors)")
        if bool(self.allocation) != (self.ladder.target is not None):
            raise ManifestError(f"package {self.model_id!r}: an allocation is recorded exactly when the ladder has a "
                                "target first rung")
        if self.quality and len(self.quality) != len(self.ladder.rungs):
            raise ManifestError(f"{len(self.quality)} quality figures for {len(self.ladder.rungs)} rungs")

    @property
    def is_delta(self) -> bool:
        return self.parent is not None

    @cached
    def specs(self) -> dict[str, TensorSpec]:
        """Each tensor's spec by name (names are unique), for lookups that must not scan every tensor."""
        return {spec.name: spec for spec in self.tensors}

    @cached
    def positions(self) -> dict[str, int]:
        """Each tensor's position in `tensors` by name."""
        return {spec.name: index for index, spec in enumerate(self.tensors)}

    @cached
    def plans(self) -> tuple[TensorPlan, ...]:
        """Each tensor's plan: which chunks carry it up the ladder (docs/FORMAT.md, "Chunks")."""
        return tuple(plan_tensor(spec, self.ladder) for spec in self.tensors)

    @property
    def data_length(self) -> int:
        return self.chunks[-1].end if self.chunks else 0

    def rung_bytes(self) -> list[int]:
        """Bytes delivered in each rung."""
        sizes = [0] * len(self.ladder.rungs)
        for chunk in self.chunks:
            sizes[chunk.rung] += chunk.length
        return sizes

    def rung_index(self, rung: int | str | None) -> int:
        """The position of `rung`, given by name (`"int8"`) or position (0 is the first rung); None is the last
        rung. Anything else raises `UsageError` listing the rungs.

        >>> manifest.rung_index("exact"), manifest.rung_index(None), manifest.rung_index(0)   # doctest: +SKIP
        (1, 1, 0)
        """
        names = self.ladder.names
        if rung is None:
            return len(names) - 1
        if isinstance(rung, str) and rung in names:
            return names.index(rung)
        if not isinstance(rung, (str, bool)):
            with contextlib.suppress(TypeError):  # any integer, numpy's too
                if 0 <= (position := operator.index(rung)) < len(names):
                    return position
        choices = ", ".join(f"{index} or {name!r}" for index, name in enumerate(names))
        raise UsageError(f"no rung {rung!r} in package {self.model_id!r}; its rungs are {choices}")

    def rung_end(self, rung: int) -> int:
        """Data offset just past the last chunk of `rung` (a device wanting only that rung stops here)."""
        return max((c.end for c in self.chunks if c.rung <= rung), default=0)

    def describe_chunk(self, index: int) -> str:
        """How error messages name chunk `index`: by its tensor and rung."""
        entry = self.chunks[index]
        return (f"chunk {index} (tensor {self.tensors[entry.tensor].name!r}, block {entry.block}, "
                f"rung {self.ladder.rungs[entry.rung].name})")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "bitladder", "version": VERSION,
            "model": self._model_json(),
            "source": self.source, "ladder": self.ladder.to_json(), "schedule": self.schedule, "digest": DIGEST_NAME,
            "quality": list(self.quality) if self.quality else [None] * len(self.ladder.rungs),
            **({"allocation": self.allocation} if self.allocation else {}),
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), **({"delta": True} if t.delta else {}),
                         **({"factor": t.factor} if t.factor else {})} for t in self.tensors],
            "chunks": [c.to_json() for c in self.chunks],
        }

    def _model_json(self) -> dict[str, Any]:
        model: dict[str, Any] = {"id": self.model_id, "version": self.model_version,
                                 "weights": self.weights[len(DIGEST_PREFIX):]}
        if self.parent is not None:
            model["parent"] = self.parent.to_json()
        return model

    def encode(self) -> bytes:
        """Header and padded manifest: everything that precedes the data."""
        body = pack_manifest(self.to_json())
        return Header(len(body), manifest_digest(body)).pack() + body

    @property
    def tensor_bytes(self) -> int:
        """Bytes the tensors take in their source dtypes: what a decoder holding them all allocates."""
        return sum(spec.nbytes for spec in self.tensors)

    @classmethod
    def decode(cls, header: Header, body: bytes | memoryview, max_bytes: int | None = None) -> Manifest:
        """Check the manifest bytes against the header digest, parse and validate them; with `max_bytes`, refuse a
        manifest whose tensors would take more than that."""
        if manifest_digest(body) != header.manifest_digest:
            raise ManifestError(f"manifest bytes at offsets {HEADER_SIZE}-{HEADER_SIZE + len(body)} fail their digest")
        manifest = _parse_manifest(unpack_manifest(body))
        if max_bytes is not None and manifest.tensor_bytes > max_bytes:
            raise ManifestError(f"manifest declares {manifest.tensor_bytes} bytes of tensors, more than the "
                                f"limit max_bytes={max_bytes}")
        return manifest


def pack_manifest(data: dict[str, Any]) -> bytes:
    """The manifest bytes of a JSON object: compact UTF-8 JSON in one zstd frame that declares its size."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest of {len(text)} bytes of JSON exceeds {MAX_MANIFEST_SIZE}")
    return zstandard.ZstdCompressor(level=MANIFEST_LEVEL, write_content_size=True).compress(text)


def unpack_manifest(body: bytes | memoryview) -> Any:
    """The JSON value in manifest bytes: one zstd frame that declares at most `MAX_MANIFEST_SIZE` bytes and a
    window of at most `MANIFEST_WINDOW`, with nothing after it (the caller checks the digest). Streamed, so that
    a frame declaring more than it holds reserves no more than it holds."""
    try:
        size = zstandard.frame_content_size(body)
        if not 0 <= size <= MAX_MANIFEST_SIZE:  # -1: a frame that does not say its size
            raise ManifestError(f"manifest frame declares {size} bytes of JSON, not 0..{MAX_MANIFEST_SIZE}")
        frame = zstandard.ZstdDecompressor(max_window_size=MANIFEST_WINDOW).decompressobj(write_size=1 << 16)
        text = frame.decompress(body)
    except zstandard.ZstdError as exc:
        raise ManifestError(f"manifest is not one zstd frame: {reprlib.repr(str(exc))}") from exc
    if not frame.eof or frame.unused_data or len(text) != size:
        raise ManifestError(f"manifest is not one zstd frame of {size} bytes of JSON and nothing after it "
                            f"({'cut short' if not frame.eof else f'{len(frame.unused_data)} bytes after the frame'})")
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON errors, huge integers
        raise ManifestError(f"manifest is not UTF-8 JSON within limits: {reprlib.repr(str(exc))}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _fail(where: str, message: str) -> ManifestError:
    return ManifestError(f"manifest {where}: {message}")


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _fail(where, f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


_ROOT_KEYS: Final = frozenset({"format", "version", "digest", "model", "source", "ladder", "schedule", "quality", "tensors",
                               "chunks", "allocation"})
MAX_ALLOCATION = 1024
"""Characters of the manifest's allocation record."""


def _digest_field(obj: Any, key: str, where: str) -> str:
    hex_digits: str = _get(obj, key, str, where)
    if len(hex_digits) != DIGEST_HEX or hex_digits.strip("0123456789abcdef"):
        raise _fail(where, f"{key} {reprlib.repr(hex_digits)} is not {DIGEST_HEX} lowercase hex digits")
    return DIGEST_PREFIX + hex_digits


def _parse_parent(model: dict[str, Any]) -> Parent | None:
    if "parent" not in model:
        return None
    parent = _get(model, "parent", dict, "model")
    if set(parent) != {"id", "version", "weights", "rung"}:
        raise _fail("model.parent", "must have exactly id, version, weights and rung")
    if _get(parent, "rung", str, "model.parent") != "exact":
        raise _fail("model.parent", f"rung {reprlib.repr(parent['rung'])}: deltas apply to their parent's exact rung")
    return Parent(_get(parent, "id", str, "model.parent"), _get(parent, "version", str, "model.parent"),
                  _digest_field(parent, "weights", "model.parent"))


def _parse_quality(items: list[Any], rungs: int) -> tuple[float | None, ...]:
    if len(items) != rungs or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and -1e4 < v < 1e4) for v in items):
        raise _fail("quality", f"must list {rungs} numbers (dB) or nulls, got {reprlib.repr(items)}")
    return tuple(None if v is None else float(v) for v in items)


def _parse_manifest(data: Any) -> Manifest:
    if isinstance(data, dict) and set(data) - _ROOT_KEYS:
        raise _fail("root", f"unknown keys {reprlib.repr(sorted(set(data) - _ROOT_KEYS))}")
    if _get(data, "format", str, "root") != "bitladder":
        raise _fail("root", "format is not 'bitladder'")
    if _get(data, "version", int, "root") != VERSION:
        raise UnsupportedVersionError(f"manifest version {reprlib.repr(data['version'])}; this library reads {VERSION}")
    if _get(data, "digest", str, "root") != DIGEST_NAME:
        raise _fail("root", f"chunk digest {reprlib.repr(data['digest'])} is not {DIGEST_NAME!r}")
    model = _get(data, "model", dict, "root")
    if set(model) - {"id", "version", "weights", "parent"}:
        raise _fail("model", f"unknown keys {reprlib.repr(sorted(set(model) - {'id', 'version', 'weights', 'parent'}))}")
    try:
        ladder = Ladder.from_json(_get(data, "ladder", dict, "root"))
    except ValueError as exc:
        raise _fail("ladder", str(exc)) from exc
    tensors = _parse_tensors(_get(data, "tensors", list, "root"))
    allocation = _get(data, "allocation", str, "root") if "allocation" in data else ""
    if len(allocation) > MAX_ALLOCATION or (ladder.target is not None) != bool(allocation):
        raise _fail("root", f"allocation {reprlib.repr(allocation)}: expected 1..{MAX_ALLOCATION} characters exactly "
                    "when the ladder has a target first rung")
    manifest = Manifest(
        model_id=_get(model, "id", str, "model"), model_version=_get(model, "version", str, "model"),
        source=_get(data, "source", dict, "root"), ladder=ladder,
        schedule=_get(data, "schedule", str, "root"), tensors=tensors, chunks=(),
        weights=_digest_field(model, "weights", "model"), parent=_parse_parent(model),
        quality=_parse_quality(_get(data, "quality", list, "root"), len(ladder.rungs)), allocation=allocation,
    )
    try:
        plans = manifest.plans
    except ValueError as exc:  # a cell width where the ladder allocates none, or none (or a bad one) where it does
        raise _fail("tensors", str(exc)) from exc
    chunks = _parse_chunks(_get(data, "chunks", list, "root"), plans, ladder)
    parsed = dataclasses.replace(manifest, chunks=chunks)
    parsed.__dict__["plans"] = plans  # the cached property: the same tensors and ladder, planned once
    return parsed


def _parse_tensors(items: list[Any]) -> tuple[TensorSpec, ...]:
    if len(items) > MAX_TENSORS:
        raise _fail("tensors", f"{len(items)} tensors exceed the limit of {MAX_TENSORS}")
    specs, names = [], set()
    for i, item in enumerate(items):
        where = f"tensor {i}"
        name, dtype = _get(item, "name", str, where), _get(item, "dtype", str, where)
        shape = _get(item, "shape", list, where)
        if set(item) - {"name", "dtype", "shape", "delta", "factor"} or item.get("delta", True) is not True:
            raise _fail(where, "has keys other than name, dtype, shape, delta (true) and factor")
        factor = item.get("factor", 0)
        if not _is_int(factor, 1, 128) and "factor" in item:
            raise _fail(where, f"factor {reprlib.repr(factor)} is not an integer in 1..127")
        if name in names:
            raise _fail(where, f"duplicate name {reprlib.repr(name)}")
        if dtype not in STORAGE:
            raise _fail(where, f"unknown dtype {reprlib.repr(dtype)}")
        if len(shape) > MAX_RANK or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
            raise _fail(where, f"bad shape {reprlib.repr(shape)}")
        spec = TensorSpec(name, dtype, tuple(shape), "delta" in item, factor)
        if spec.numel >= 2**40:
            raise _fail(where, f"{spec.numel} elements exceed the limit of 2**40")
        names.add(name)
        specs.append(spec)
    return tuple(specs)


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def _max_chunk(plan: TensorPlan) -> int:
    """No valid chunk of this tensor is longer (the core's output bound, zstd's for planes)."""
    block = min(plan.block_size, plan.spec.numel)
    return 16 * block + 2 * plan.rows + 300_000


def _parse_chunks(items: list[Any], plans: tuple[TensorPlan, ...], ladder: Ladder) -> tuple[ChunkEntry, ...]:
    chunks: list[ChunkEntry] = []
    next_step: dict[tuple[int, int], int] = {}
    longest: dict[int, int] = {}  # per tensor, its _max_chunk
    position = 0
    for i, item in enumerate(items):
        where = f"chunk {i}"
        if not isinstance(item, list) or len(item) != 5:
            raise _fail(where, "is not [tensor, block, rung, length, digest]")
        tensor, block, rung, length, hex_digits = item
        if not _is_int(tensor, 0, len(plans)):
            raise _fail(where, f"tensor index {reprlib.repr(tensor)} out of range")
        plan = plans[tensor]
        if not _is_int(block, 0, plan.blocks):
            raise _fail(where, f"block {reprlib.repr(block)} out of range: tensor {tensor} has {plan.blocks}")
        step = plan.step_at(rung) if _is_int(rung, 0, len(ladder.rungs)) else None
        if step is None:
            raise _fail(where, f"rung {reprlib.repr(rung)} carries no chunk of tensor {tensor}")
        if next_step.get((tensor, block), 0) != step:
            raise _fail(where, f"tensor {tensor} block {block} gets rung {rung} out of order")
        next_step[(tensor, block)] = step + 1
        if tensor not in longest:
            longest[tensor] = _max_chunk(plan)
        if not _is_int(length, 0, longest[tensor] + 1):
            raise _fail(where, f"length {reprlib.repr(length)} out of range")
        if not isinstance(hex_digits, str) or len(hex_digits) != DIGEST_HEX or hex_digits.strip("0123456789abcdef"):
            raise _fail(where, f"digest {reprlib.repr(hex_digits)} is not {DIGEST_HEX} lowercase hex digits")
        if chunks and rung < chunks[-1].rung:
            raise _fail(where, f"rung {rung} after rung {chunks[-1].rung}: chunks must be in rung order")
        chunks.append(ChunkEntry(tensor, block, rung, plan.steps[step].reaches, step, position, length,
                                 DIGEST_PREFIX + hex_digits))
        position += length
    for tensor, plan in enumerate(plans):
        for block in range(plan.blocks):
            if next_step.get((tensor, block), 0) != len(plan.steps):
                raise _fail("chunks", f"tensor {tensor} block {block} lacks the chunk of step "
                            f"{next_step.get((tensor, block), 0)}")
    return tuple(chunks)
