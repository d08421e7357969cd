"""The package format (docs/FORMAT.md is normative; this module is its executable form).

    offset  size  field
    0       4     magic b"BLAD"
    4       2     format version, u16 little-endian (1)
    6       2     flags, u16 (0; anything else is refused)
    8       8     manifest length M in bytes, u64 little-endian (8 <= M <= 64 MiB, M % 8 == 0)
    16      16    xxh3-128 digest of the M manifest bytes (big-endian digest bytes)
    32      M     manifest: UTF-8 JSON object, right-padded with spaces
    32 + M  ...   chunks back to back, in manifest order; together exactly `data_length` bytes
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final

import xxhash

from ..codecs.ladder import Ladder
from ..codecs.states import STORAGE, TensorSpec
from ..codecs.transforms import ChunkCodec
from ..errors import BadMagicError, ManifestError, UnsupportedVersionError

MAGIC: Final = b"BLAD"
VERSION: Final = 1
HEADER_SIZE: Final = 32
MAX_MANIFEST_SIZE: Final = 64 * 1024 * 1024
MAX_TENSORS: Final = 1_000_000
MAX_SECTIONS: Final = 16
MAX_RANK: Final = 16
DIGEST_PREFIX: Final = "xxh3-128:"
_HEADER: Final = struct.Struct("<4sHHQ16s")


def digest(data: bytes | memoryview) -> str:
    """The chunk digest string the manifest records."""
    return DIGEST_PREFIX + xxhash.xxh3_128_hexdigest(data)


@dataclass(frozen=True)
class Header:
    manifest_length: int
    manifest_digest: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, 0, self.manifest_length, self.manifest_digest)

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Header:
        """Parse and check the 32 fixed bytes at the start of a package."""
        if len(data) < HEADER_SIZE:
            raise BadMagicError(f"package shorter than its {HEADER_SIZE}-byte header ({len(data)} bytes)")
        magic, version, flags, length, manifest_digest = _HEADER.unpack(bytes(data[:HEADER_SIZE]))
        if magic != MAGIC:
            raise BadMagicError(f"bytes 0-3 are {magic!r}, not the bitladder magic {MAGIC!r}")
        if version != VERSION:
            raise UnsupportedVersionError(f"format version {version} at offset 4; this library reads {VERSION}")
        if flags != 0:
            raise UnsupportedVersionError(f"unknown flags {flags:#06x} at offset 6")
        if not 8 <= length <= MAX_MANIFEST_SIZE or length % 8:
            raise ManifestError(f"manifest length {length} at offset 8 is not a multiple of 8 in [8, {MAX_MANIFEST_SIZE}]")
        return cls(length, manifest_digest)


@dataclass(frozen=True)
class ChunkEntry:
    """Where one chunk lies (relative to the data start) and how to decode it."""

    tensor: int
    rung: int
    reaches: int
    codec: str
    params: dict[str, Any]
    sections: tuple[int, ...]
    offset: int
    digest: str

    @property
    def length(self) -> int:
        return sum(self.sections)

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor, "rung": self.rung, "reaches": self.reaches, "codec": self.codec,
            "params": self.params, "sections": list(self.sections), "offset": self.offset,
            "length": self.length, "digest": self.digest,
        }


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

    @property
    def data_length(self) -> int:
        return self.chunks[-1].end if self.chunks else 0

    def rung_bytes(self) -> list[int]:
        """Bytes delivered in each rung."""
        sizes = [0] * len(self.ladder.rungs)
        for chunk in self.chunks:
            sizes[chunk.rung] += chunk.length
        return sizes

    def rung_end(self, rung: int) -> int:
        """Data offset just past the last chunk of `rung` (a device wanting only that rung stops here)."""
        return max((c.end for c in self.chunks if c.rung <= rung), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "bitladder", "version": VERSION,
            "model": {"id": self.model_id, "version": self.model_version},
            "source": self.source, "ladder": self.ladder.to_json(), "schedule": self.schedule,
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in self.tensors],
            "chunks": [c.to_json() for c in self.chunks],
        }

    def encode(self) -> bytes:
        """Header and padded manifest: everything that precedes the data."""
        body = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
        body += b" " * (-len(body) % 8)
        if len(body) > MAX_MANIFEST_SIZE:
            raise ManifestError(f"manifest of {len(body)} bytes exceeds {MAX_MANIFEST_SIZE}")
        return Header(len(body), xxhash.xxh3_128_digest(body)).pack() + body

    @classmethod
    def decode(cls, header: Header, body: bytes | memoryview) -> Manifest:
        """Check the manifest bytes against the header digest, parse and validate them."""
        if xxhash.xxh3_128_digest(body) != header.manifest_digest:
            raise ManifestError(f"manifest bytes at offsets {HEADER_SIZE}-{HEADER_SIZE + len(body)} fail their digest")
        try:
            data = json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"manifest is not UTF-8 JSON: {exc}") from exc
        return _parse_manifest(data)


def _fail(where: str, message: str) -> ManifestError:
    return ManifestError(f"manifest {where}: {message}")


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _fail(where, f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _parse_manifest(data: Any) -> Manifest:
    if _get(data, "format", str, "root") != "bitladder":
        raise _fail("root", "format is not 'bitladder'")
    if _get(data, "version", int, "root") != VERSION:
        raise UnsupportedVersionError(f"manifest version {data['version']}; this library reads {VERSION}")
    model = _get(data, "model", dict, "root")
    try:
        ladder = Ladder.from_json(_get(data, "ladder", dict, "root"))
    except ValueError as exc:
        raise _fail("ladder", str(exc)) from exc
    tensors = _parse_tensors(_get(data, "tensors", list, "root"))
    chunks = _parse_chunks(_get(data, "chunks", list, "root"), tensors, ladder)
    return Manifest(
        model_id=_get(model, "id", str, "model"), model_version=_get(model, "version", str, "model"),
        source=_get(data, "source", dict, "root"), ladder=ladder,
        schedule=_get(data, "schedule", str, "root"), tensors=tensors, chunks=chunks,
    )


def _parse_tensors(items: list[Any]) -> tuple[TensorSpec, ...]:
    if len(items) > MAX_TENSORS:
        raise _fail("tensors", f"{len(items)} tensors exceed the limit of {MAX_TENSORS}")
    specs, names = [], set()
    for i, item in enumerate(items):
        where = f"tensor {i}"
        name, dtype = _get(item, "name", str, where), _get(item, "dtype", str, where)
        shape = _get(item, "shape", list, where)
        if name in names:
            raise _fail(where, f"duplicate name {name!r}")
        if dtype not in STORAGE:
            raise _fail(where, f"unknown dtype {dtype!r}")
        if len(shape) > MAX_RANK or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
            raise _fail(where, f"bad shape {shape!r}")
        spec = TensorSpec(name, dtype, tuple(shape))
        if spec.numel >= 2**40:
            raise _fail(where, f"{spec.numel} elements exceed the limit of 2**40")
        names.add(name)
        specs.append(spec)
    return tuple(specs)


def _parse_chunk(item: Any, where: str, tensors: tuple[TensorSpec, ...], ladder: Ladder) -> ChunkEntry:
    tensor = _get(item, "tensor", int, where)
    rung, reaches = _get(item, "rung", int, where), _get(item, "reaches", int, where)
    if not 0 <= tensor < len(tensors):
        raise _fail(where, f"tensor index {tensor} out of range")
    if not 0 <= rung <= reaches < len(ladder.rungs):
        raise _fail(where, f"rung {rung} / reaches {reaches} out of range for a {len(ladder.rungs)}-rung ladder")
    codec_name = _get(item, "codec", str, where)
    if codec_name not in ChunkCodec.registry:
        raise _fail(where, f"unknown codec {codec_name!r}")
    params = _get(item, "params", dict, where)
    sections = _get(item, "sections", list, where)
    if len(sections) > MAX_SECTIONS or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sections):
        raise _fail(where, f"bad section lengths {sections!r}")
    if len(sections) != ChunkCodec.registry[codec_name].section_count(tensors[tensor], params):
        raise _fail(where, f"{len(sections)} sections do not fit codec {codec_name!r}")
    entry = ChunkEntry(tensor, rung, reaches, codec_name, params, tuple(sections),
                       _get(item, "offset", int, where), _get(item, "digest", str, where))
    if _get(item, "length", int, where) != entry.length:
        raise _fail(where, f"length {item['length']} is not the sum of its sections ({entry.length})")
    if not entry.digest.startswith(DIGEST_PREFIX) or len(entry.digest) != len(DIGEST_PREFIX) + 32:
        raise _fail(where, f"digest {entry.digest!r} is not {DIGEST_PREFIX}<32 hex digits>")
    return entry


def _parse_chunks(items: list[Any], tensors: tuple[TensorSpec, ...], ladder: Ladder) -> tuple[ChunkEntry, ...]:
    chunks: list[ChunkEntry] = []
    last_rung_of_tensor: dict[int, int] = {}
    position = 0
    for i, item in enumerate(items):
        where = f"chunk {i}"
        entry = _parse_chunk(item, where, tensors, ladder)
        if entry.offset != position:
            raise _fail(where, f"offset {entry.offset} leaves a hole or overlap (expected {position})")
        if chunks and entry.rung < chunks[-1].rung:
            raise _fail(where, f"rung {entry.rung} after rung {chunks[-1].rung}: chunks must be in rung order")
        if last_rung_of_tensor.get(entry.tensor, -1) >= entry.rung:
            raise _fail(where, f"tensor {entry.tensor} already has a chunk at rung {entry.rung} or above")
        last_rung_of_tensor[entry.tensor] = entry.reaches
        position = entry.end
        chunks.append(entry)
    missing = [tensors[i].name for i in range(len(tensors)) if i not in last_rung_of_tensor]
    if missing:
        raise _fail("chunks", f"no chunk for tensor(s) {missing[:3]}")
    return tuple(chunks)
