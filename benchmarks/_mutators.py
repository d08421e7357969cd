"""Mutations of valid packages for benchmarks/fuzz.py: one registered function per class of damage.

Each mutation takes a `Seed` (a real package, split into header, manifest and chunk data) and a seeded
`random.Random`, and returns the mutated bytes with a one-line description (the repro). Classes that edit the
manifest or a chunk rebuild the header, the manifest digest and the chunk digests, so that the damage gets past
the integrity checks to the parsers and the decoders behind them.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard

from bitladder.codecs.states import STORAGE
from bitladder.format.spec import HEADER_SIZE, MAX_MANIFEST_SIZE, Header, digest, manifest_digest, unpack_manifest

# Chunk entries are [tensor, block, rung, length, digest hex]; digests are "<name>:<hex>" in the library.
TENSOR, BLOCK, RUNG, LENGTH, DIGEST = range(5)


@dataclass(frozen=True)
class Seed:
    """A valid package and its parts: the manifest as JSON, each chunk's bytes."""

    name: str
    package: bytes
    manifest: dict[str, Any]
    chunks: tuple[bytes, ...]

    @classmethod
    def of(cls, name: str, package: bytes) -> Seed:
        (length,) = struct.unpack_from("<Q", package, 8)
        manifest = unpack_manifest(package[HEADER_SIZE:HEADER_SIZE + length])
        at, chunks = HEADER_SIZE + length, []
        for entry in manifest["chunks"]:
            chunks.append(package[at:at + entry[LENGTH]])
            at += entry[LENGTH]
        return cls(name, package, manifest, tuple(chunks))

    @property
    def data_start(self) -> int:
        return len(self.package) - sum(len(c) for c in self.chunks)

    def copy(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.manifest))


def chunk_hex(payload: bytes) -> str:
    return digest(payload).split(":", 1)[1]


def frame(text: bytes) -> bytes:
    """Manifest bytes holding `text`, valid JSON or not: one zstd frame that declares its size."""
    return zstandard.ZstdCompressor(write_content_size=True).compress(text)


def pack(manifest: Any, data: bytes, *, body: bytes | None = None) -> bytes:
    """Header (with the manifest digest recomputed), the manifest (JSON text, bytes, or a value to write as JSON)
    in its zstd frame (or the manifest bytes `body` as they are), then `data`."""
    if body is None:
        if not isinstance(manifest, (str, bytes)):
            manifest = json.dumps(manifest, separators=(",", ":"))
        body = frame(manifest.encode() if isinstance(manifest, str) else manifest)
    return Header(len(body), manifest_digest(body)).pack() + body + data


def repack(manifest: dict[str, Any], chunks: list[bytes]) -> bytes:
    """A package from a manifest and chunk payloads, with every chunk length and digest recomputed."""
    for entry, payload in zip(manifest["chunks"], chunks, strict=True):
        entry[LENGTH], entry[DIGEST] = len(payload), chunk_hex(payload)
    return pack(manifest, b"".join(chunks))


Mutation = Callable[[Seed, random.Random], tuple[bytes, str]]
MUTATIONS: dict[str, Mutation] = {}


def mutation(name: str) -> Callable[[Mutation], Mutation]:
    def register(function: Mutation) -> Mutation:
        MUTATIONS[name] = function
        return function
    return register


def _noise(rng: random.Random, size: int) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(size)
    if kind == 1:
        return b"\xff" * size
    if kind == 2:
        return bytes([rng.randrange(256)]) * size
    return rng.randbytes(size)


INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0x100000000, 2**63 - 1, 2**63, 2**64 - 1)


def _field(data: bytearray, rng: random.Random) -> str:
    """Overwrite a little-endian integer field (counts and lengths sit near a payload's start) with an edge value."""
    width = rng.choice((1, 2, 4, 8))
    at = rng.randrange(min(len(data), 64)) if rng.random() < 0.7 else rng.randrange(len(data))
    value = rng.choice((*INTERESTING, len(data), len(data) - 1, len(data) + 1, int.from_bytes(data[at:at + width], "little") + 1))
    data[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")[:len(data) - at]
    return f"u{8 * width} at {at} = {value:#x}"


def _damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Bit flips, a byte run, an integer field, a cut or an extension of `data` (the raw and payload classes)."""
    out = bytearray(data)
    kind = rng.randrange(5) if data else 3
    if kind == 4:
        what = _field(out, rng)
        return bytes(out), what
    if kind == 0:
        spots = sorted(rng.randrange(len(out) * 8) for _ in range(rng.choice((1, 1, 2, 3, 8))))
        for bit in spots:
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out), f"flip bits {spots}"
    if kind == 1:
        at, size = rng.randrange(len(out)), rng.choice((1, 2, 4, 8, 16, 64, 256))
        out[at:at + size] = _noise(rng, min(size, len(out) - at))
        return bytes(out), f"overwrite {size} bytes at {at}"
    if kind == 2:
        cut = rng.randrange(len(out))
        return bytes(out[:cut]), f"cut to {cut} bytes"
    at, size = rng.randrange(len(out) + 1), rng.choice((1, 3, 8, 100, 4096))
    return bytes(out[:at]) + _noise(rng, size) + bytes(out[at:]), f"insert {size} bytes at {at}"


@mutation("bit flips")
def bit_flips(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(seed.package)
    # A third of the flips land in the header and manifest, which are a small part of the bytes.
    span = seed.data_start if rng.random() < 0.33 else len(out)
    spots = sorted(rng.randrange(span * 8) for _ in range(rng.choice((1, 1, 1, 2, 4, 8))))
    for bit in spots:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out), f"flip bits {spots}"


@mutation("byte runs")
def byte_runs(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(seed.package)
    span = seed.data_start if rng.random() < 0.33 else len(out)
    if rng.random() < 0.3:
        return bytes(out), _field(out, rng)
    at, size = rng.randrange(span), rng.choice((1, 2, 4, 8, 16, 64, 256, 4096))
    out[at:at + size] = _noise(rng, min(size, len(out) - at))
    return bytes(out), f"overwrite {size} bytes at {at}"


def _boundaries(seed: Seed) -> list[int]:
    edges, at = [0, 4, 6, 8, 16, HEADER_SIZE, seed.data_start], seed.data_start
    for payload in seed.chunks:
        at += len(payload)
        edges.append(at)
    return edges


@mutation("truncation")
def truncation(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    near_edge = rng.random() < 0.5
    cut = max(0, rng.choice(_boundaries(seed)) + rng.choice((-1, 0, 1))) if near_edge else rng.randrange(len(seed.package))
    return seed.package[:cut], f"cut to {cut} of {len(seed.package)} bytes"


@mutation("extension")
def extension(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.randrange(4)
    if kind == 0:
        size = rng.choice((1, 7, 8, 4096))
        return seed.package + _noise(rng, size), f"append {size} bytes"
    if kind == 1:
        return seed.package + seed.package, "the package twice"
    if kind == 2:
        last = seed.chunks[-1]
        return seed.package + last, f"last chunk ({len(last)} bytes) repeated"
    at, size = rng.randrange(len(seed.package)), rng.choice((1, 8, 100))
    return seed.package[:at] + _noise(rng, size) + seed.package[at:], f"insert {size} bytes at {at}"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON tree (a chunk table's rows count as leaves beyond the first few)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            found += _paths(item, (*path, index))
    return found


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


PLACEHOLDER = "\x00fuzz\x00"


def _with_text(manifest: dict[str, Any], path: tuple[Any, ...], text: str) -> str:
    """The manifest as JSON with raw `text` at `path` (for values json.dumps cannot or will not write)."""
    tree = _set(manifest, path, PLACEHOLDER)
    return json.dumps(tree, separators=(",", ":")).replace(json.dumps(PLACEHOLDER), text)


@mutation("manifest JSON")
def manifest_json(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest = seed.copy()
    path = rng.choice(_paths(manifest))
    depth = rng.choice((100, 999, 1000, 5000, 100_000))
    digits = rng.choice((4299, 4300, 4301, 20_000))
    texts = {
        "deep list": "[" * depth + "]" * depth,
        "deep object": '{"a":' * depth + "0" + "}" * depth,
        "huge integer": rng.choice(("", "-")) + "9" * digits,
        "big float": rng.choice(("1e309", "-1e309", "NaN", "Infinity", "-0.0", "1.5e300")),
        "long string": json.dumps("x" * rng.choice((1 << 10, 1 << 20))),
        "wide list": "[" + ",".join([rng.choice(("{}", "[]", "0", '""'))] * rng.choice((1000, 300_000))) + "]",
        "bad escape": rng.choice(('"\\ud800"', '"\\x41"', '"\\u12"', '"\u0000"')),
    }
    what = rng.choice(sorted(texts)) if rng.random() < 0.8 else "raw"
    if what != "raw":
        text = _with_text(manifest, path, texts[what])
        return pack(text, b"".join(seed.chunks)), f"{what} (depth {depth}, digits {digits}) at {list(path)}"
    body = json.dumps(manifest, separators=(",", ":")).encode()
    if rng.random() < 0.3:  # the frame itself: the digest recomputed, so the damage reaches the decompressor
        framed = frame(body)
        frames = {
            "unframed JSON": body,
            "frame without its size": zstandard.ZstdCompressor(write_content_size=False).compress(body),
            "bytes after the frame": framed + rng.choice((b"\x00", b" " * 7, framed)),
            "frame cut short": framed[:rng.randrange(len(framed))],
            "frame declaring more": _declaring(framed, rng.choice((len(body) + 1, MAX_MANIFEST_SIZE + 1, 2**39))),
            "zero bomb": frame(bytes(rng.choice((MAX_MANIFEST_SIZE + 1, 1 << 20)))),
        }
        what = rng.choice(sorted(frames))
        return pack(None, b"".join(seed.chunks), body=frames[what]), f"manifest frame: {what}"
    raw = rng.choice((b"", b"[]", b"null", b'"bitladder"', body[:-1], body + b"}", body + b" x", b"\xef\xbb\xbf" + body,
                      body.replace(b'"format"', b'"format":"x","format"', 1), body[:10] + b"\xff\xfe" + body[10:]))
    return pack(raw, b"".join(seed.chunks)), f"manifest replaced by {raw[:24]!r}... ({len(raw)} bytes)"


def _declaring(framed: bytes, size: int) -> bytes:
    """The frame with its header rewritten to declare `size` bytes of content (an 8-byte size field)."""
    descriptor = framed[4]
    single, size_flag = descriptor >> 5 & 1, descriptor >> 6
    field = (0, 2, 4, 8)[size_flag] if size_flag else (1 if single else 0)
    start = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    new = (descriptor & 0x3F) | 0xC0  # an 8-byte content size
    return framed[:4] + bytes([new]) + framed[5:start] + size.to_bytes(8, "little") + framed[start + field:]


WRONG_TYPES: tuple[Any, ...] = ([], {}, "", "x", 0, 1, -1, 2**31, 2**63, 2**64, -2**63 - 1, 10**400, 1.5, -0.0, None, True,
                                False, [[]], [0] * 1000, {"kind": "int"}, ["blake3"], "F32", [1, 2, 3, 4, 5])


@mutation("manifest types")
def manifest_types(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest = seed.copy()
    path = rng.choice(_paths(manifest))
    value = rng.choice(WRONG_TYPES)
    return pack(_set(manifest, path, value), b"".join(seed.chunks)), f"{list(path)} = {json.dumps(value)[:40]}"


HUGE_SHAPES: tuple[list[int], ...] = (
    [2**32, 2**32], [2**31, 2**31, 4], [3037000500, 3037000500], [2**63], [2**64], [-1], [-1, -1], [2**40], [2**39, 2],
    [2**20, 2**19], [2**39 - 1], [1] * 17, [0], [], [2**62, 4], [4, 2**62], [2**16] * 4, [65537, 65521, 4096],
)


@mutation("shapes and dtypes")
def shapes_dtypes(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest = seed.copy()
    index = rng.randrange(len(manifest["tensors"]))
    tensor = manifest["tensors"][index]
    numel = 1
    for side in tensor["shape"]:
        numel *= side
    kind = rng.randrange(3)
    if kind == 0:
        tensor["shape"] = list(rng.choice(HUGE_SHAPES))
    elif kind == 1:  # same element count, another layout: rows, columns and scales change under the payload
        side = rng.choice([d for d in range(1, min(numel, 4096) + 1) if numel % d == 0] or [1])
        tensor["shape"] = rng.choice(([side, numel // side], [numel], [numel // side, side, 1], [1, numel]))
    else:  # int ladders on integer tensors, floats read as ints, widths changed under the same bytes
        tensor["dtype"] = rng.choice([*STORAGE, "F8", "f32", "", "I128"])
        if rng.random() < 0.3:
            tensor["shape"] = [numel * 2] if rng.random() < 0.5 else [max(numel // 2, 1)]
    return pack(manifest, b"".join(seed.chunks)), f"tensor {index} ({tensor['name']}) -> {tensor['dtype']} {tensor['shape']}"


@mutation("chunk table")
def chunk_table(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest, chunks = seed.copy(), list(seed.chunks)
    table = manifest["chunks"]
    i, j = rng.randrange(len(table)), rng.randrange(len(table))
    kind = rng.randrange(7)
    if kind == 0:
        value = rng.choice((-1, -2**63, 2**63, 2**64, 2**40, table[i][LENGTH] + 1, table[i][LENGTH] - 1, 0))
        table[i][LENGTH] = value
        return pack(manifest, b"".join(chunks)), f"chunk {i} length = {value} (data unchanged)"
    if kind == 1:
        table[i], table[j] = table[j], table[i]
        return pack(manifest, b"".join(chunks)), f"entries {i} and {j} swapped (data unchanged)"
    if kind == 2:
        table[i], table[j] = table[j], table[i]
        chunks[i], chunks[j] = chunks[j], chunks[i]
        return pack(manifest, b"".join(chunks)), f"chunks {i} and {j} swapped with their entries"
    if kind == 3:
        table.insert(i, list(table[i]))
        chunks.insert(i, chunks[i])
        return pack(manifest, b"".join(chunks)), f"chunk {i} duplicated"
    if kind == 4:
        del table[i], chunks[i]
        return pack(manifest, b"".join(chunks)), f"chunk {i} dropped"
    if kind == 5:
        field = rng.choice((TENSOR, BLOCK, RUNG))
        value = rng.choice((table[i][field] + 1, table[i][field] - 1, table[j][field], 2**40))
        table[i][field] = value
        return pack(manifest, b"".join(chunks)), f"chunk {i} field {field} = {value}"
    table[i] = rng.choice((table[i][:4], [*table[i], 0], table[i][:4] + [table[i][DIGEST].upper()],
                           table[i][:4] + [table[i][DIGEST][:-1]], table[i][:4] + ["blake3:" + table[i][DIGEST]]))
    return pack(manifest, b"".join(chunks)), f"chunk {i} = {json.dumps(table[i])[:60]}"


@mutation("ladder")
def ladder(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest = seed.copy()
    ladder, rungs = manifest["ladder"], manifest["ladder"]["rungs"]
    kind = rng.randrange(5)
    if kind == 0:
        key = rng.choice(("min_size", "block_size"))
        value = rng.choice((0, 1, 2, 7, ladder[key] // 2, ladder[key] * 2, 2**24, 2**24 + 1, 2**40, -1))
        ladder[key] = value
        return pack(manifest, b"".join(seed.chunks)), f"ladder {key} = {value}"
    index = rng.randrange(len(rungs))
    rung = rungs[index]
    if kind == 1 and rung["kind"] == "int":
        key = rng.choice(("bits", "group_size"))
        rung[key] = rng.choice((1, 2, 3, 5, 7, 8, 9, 16, 64, 384, 2**40, -1) if key == "bits" else (0, 1, 7, 64, 384, 2**40, -1))
        return pack(manifest, b"".join(seed.chunks)), f"rung {index} {key} = {rung[key]}"
    if kind == 1 and rung["kind"] == "half":
        rung["format"] = rng.choice(("bf16", "fp16", "fp8", ""))
        return pack(manifest, b"".join(seed.chunks)), f"rung {index} format = {rung['format']}"
    if kind == 2:
        new = rng.choice(({"kind": "exact"}, {"kind": "int", "bits": 6, "group_size": 0}, {"kind": "half", "format": "fp16"},
                          {"kind": "int", "bits": 8}, {"kind": "lossless"}))
        rungs.insert(rng.randrange(len(rungs) + 1), new)
        return pack(manifest, b"".join(seed.chunks)), f"rung {json.dumps(new)} inserted: {json.dumps(rungs)}"
    if kind == 3 and len(rungs) > 1:
        del rungs[index]
        return pack(manifest, b"".join(seed.chunks)), f"rung {index} removed"
    rung[rng.choice(("extra", "Kind", "bits"))] = 8
    return pack(manifest, b"".join(seed.chunks)), f"rung {index} = {json.dumps(rung)}"


@mutation("payload (digest fixed)")
def payload(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest, chunks = seed.copy(), list(seed.chunks)
    index = rng.randrange(len(chunks))
    chunks[index], what = _damage(chunks[index], rng)
    return repack(manifest, chunks), f"chunk {index} ({manifest['chunks'][index][:3]}): {what}, digest recomputed"


@mutation("payload swap (digest fixed)")
def payload_swap(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    manifest, chunks = seed.copy(), list(seed.chunks)
    i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
    if rng.random() < 0.5:
        chunks[i], chunks[j] = chunks[j], chunks[i]
        what = f"payloads of chunks {i} and {j} swapped"
    else:
        chunks[i] = chunks[j]
        what = f"chunk {i} given chunk {j}'s payload"
    return repack(manifest, chunks), f"{what}, entries kept, digests recomputed"


@mutation("huge tensor (chunks complete)")
def huge_tensor(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A tensor declared huge with a complete, digest-correct chunk table of empty or tiny chunks: whatever the
    decoder allocates for it before a chunk decodes is amplification (kilobytes in, gigabytes reserved). Blocks
    become 2**24 elements; the seed's tensors of more than one block are dropped, the others stay valid."""
    manifest = seed.copy()
    table = manifest["chunks"]
    single = [t for t in range(len(manifest["tensors"])) if all(e[BLOCK] == 0 for e in table if e[TENSOR] == t)]
    single = single or [rng.randrange(len(manifest["tensors"]))]  # its own chunks are replaced below
    index = rng.choice(single)
    keep = {old: new for new, old in enumerate(single)}
    manifest["tensors"] = [manifest["tensors"][t] for t in single]
    tensor = manifest["tensors"][keep[index]]
    numel = rng.choice((2**31, 2**33 + 5, 2**35))  # up to 2048 blocks of 2**24 elements
    tensor["shape"], tensor["dtype"] = [numel], rng.choice(("U8", "I64", "F64"))  # never laddered: one chunk a block
    manifest["ladder"]["block_size"] = 2**24
    payload = rng.choice((b"", bytes(64), seed.chunks[0][:64]))
    rows = [([keep[e[TENSOR]], *e[1:]], c) for e, c in zip(table, seed.chunks, strict=True)
            if e[TENSOR] in keep and e[TENSOR] != index]
    ahead = sum(1 for e, _ in rows if e[RUNG] == 0)  # the huge tensor's chunks go last in rung 0
    blocks = -(-numel // 2**24)
    rows[ahead:ahead] = [([keep[index], block, 0, len(payload), chunk_hex(payload)], payload) for block in range(blocks)]
    manifest["chunks"] = [e for e, _ in rows]
    return (pack(manifest, b"".join(c for _, c in rows)),
            f"tensor {keep[index]} = {tensor['dtype']} [{numel}] in {blocks} chunks of {len(payload)} bytes")
