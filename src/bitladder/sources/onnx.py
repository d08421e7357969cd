"""ONNX models: their weights (initializers and `Constant` nodes) in, an identical `.onnx` file out.

The graph without the weight bytes (the "skeleton") travels in the package's source metadata, so a decoder
rebuilds the very same file: `write_onnx(path, tensors, metadata)` fills each tensor back into the field it
came from, and protobuf writes the same bytes. Models with external data are not supported.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import STORAGE
from ..errors import SourceError, UnsupportedDtypeError
from ..outputs import output_file, storage_bits
from ._checks import regular_file, shape_of
from .model import SourceModel, SourceTensor

SKELETON_KEY = "onnx.skeleton"
FIELDS_KEY = "onnx.fields"

# TensorProto.DataType -> safetensors dtype name
ONNX_DTYPES = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16", 11: "F64",
           12: "U32", 13: "U64", 16: "BF16"}
ONNX_TYPE_CODES = {name: code for code, name in ONNX_DTYPES.items()}
# Where each dtype's values go when a tensor does not use raw_data (onnx.proto's rules)
_TYPED_FIELD = {"F32": "float_data", "F64": "double_data", "I64": "int64_data", "U32": "uint64_data",
                "U64": "uint64_data"}
_DATA_FIELDS = ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data")


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise SourceError("ONNX models need the onnx package (pip install 'bitladder[onnx]')") from exc
    return onnx


def weight_protos(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, TensorProto) of every initializer, then every `Constant` node's `value`, in graph order."""
    for init in model.graph.initializer:
        yield init.name, init
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    if len(node.output) != 1:
                        raise SourceError(f"Constant node {node.name!r} has {len(node.output)} outputs, not one")
                    yield node.output[0], attr.t


def _field(proto: Any) -> str:
    for name in _DATA_FIELDS:
        if (name == "raw_data" and proto.HasField("raw_data")) or (name != "raw_data" and len(getattr(proto, name))):
            return name
    return "none"  # an empty tensor that stores nothing


def _check_field(name: str, proto: Any, dtype: str, count: int, where: str) -> str:
    """The one field that holds the values, the one onnx.proto assigns to the dtype, with `count` values."""
    used = [f for f in _DATA_FIELDS if (proto.HasField(f) if f == "raw_data" else len(getattr(proto, f)))]
    if len(used) > 1:
        raise SourceError(f"{where}tensor {name!r} stores values in both {used[0]} and {used[1]}")
    field = used[0] if used else "none"
    if field not in ("none", "raw_data", _TYPED_FIELD.get(dtype, "int32_data")):
        raise SourceError(f"{where}tensor {name!r} of ONNX type {dtype} keeps its values in {field}")
    held = len(proto.raw_data) // STORAGE[dtype].itemsize if field == "raw_data" else 0 if field == "none" else \
        len(getattr(proto, field))
    if held != count or (field == "raw_data" and len(proto.raw_data) % STORAGE[dtype].itemsize):
        size = f"{len(proto.raw_data)} bytes" if field == "raw_data" else f"{held} values"
        raise SourceError(f"{where}tensor {name!r} holds {size} for shape {list(proto.dims)} of {dtype}")
    return field


def _integers(field: str, values: Any, storage: np.dtype[Any], name: str, where: str) -> NDArray[Any]:
    """int32_data / int64_data / uint64_data values in the storage dtype, refusing any the dtype cannot hold."""
    data = np.asarray(values, dtype=np.uint64 if field == "uint64_data" else np.int64)
    limits = np.iinfo(storage)
    if data.size and (int(data.min()) < limits.min or int(data.max()) > limits.max):
        raise SourceError(f"{where}tensor {name!r} has values outside {storage} ({int(data.min())}..{int(data.max())})")
    return data.astype(storage)


def tensor_from_proto(name: str, proto: Any, where: str = "") -> SourceTensor:
    """A TensorProto as a flat array in its storage dtype (floats as their bit view)."""
    dtype = ONNX_DTYPES.get(proto.data_type)
    if dtype is None:
        raise UnsupportedDtypeError(f"{where}tensor {name!r} has ONNX data type {proto.data_type}")
    if proto.data_location == 1:
        raise SourceError(f"{where}tensor {name!r} keeps its data in an external file, which is not supported")
    if proto.data_location != 0 or proto.HasField("segment"):
        raise SourceError(f"{where}tensor {name!r} has data location {proto.data_location} or a segment, "
                          "which are not supported")
    shape, count = shape_of(list(proto.dims), f"{where}tensor {name!r}")
    storage = STORAGE[dtype]
    field = _check_field(name, proto, dtype, count, where)
    if field == "none":
        data: NDArray[Any] = np.zeros(0, dtype=storage)
    elif field == "raw_data":
        data = np.frombuffer(proto.raw_data, dtype=storage).copy()
    elif field == "float_data":
        data = np.asarray(proto.float_data, dtype=np.float32).view(storage)
    elif field == "double_data":
        data = np.asarray(proto.double_data, dtype=np.float64)
    else:
        data = _integers(field, getattr(proto, field), storage, name, where)
    return SourceTensor(name, dtype, shape, data)


def fill_proto(proto: Any, dtype: str, array: NDArray[Any], field: str) -> None:
    """Put `array` (values or storage bits) into `proto`'s `field`, clearing the others."""
    for name in _DATA_FIELDS:
        proto.ClearField(name)
    flat = storage_bits(dtype, array).reshape(-1)          # values or bits: the same bits either way
    if field == "none":
        return
    if field == "raw_data":
        proto.raw_data = flat.tobytes()
    elif field == "float_data":
        proto.float_data.extend(flat.view(np.float32).tolist())
    elif field == "double_data":
        proto.double_data.extend(flat.tolist())
    else:
        getattr(proto, field).extend(flat.astype(np.int64).tolist())


def load_onnx_source(path: Path) -> SourceModel:
    """The weights of an `.onnx` file, with the graph skeleton in the metadata."""
    onnx = _onnx()
    regular_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError and friends
        raise SourceError(f"{path}: cannot parse as ONNX ({type(exc).__name__}: {exc})") from exc
    tensors: dict[str, SourceTensor] = {}
    fields: dict[str, str] = {}
    try:
        weights = list(weight_protos(model))
    except SourceError as exc:
        raise SourceError(f"{path}: {exc}") from exc
    for name, proto in weights:
        if proto.data_type not in ONNX_DTYPES:
            continue  # strings and exotic types stay in the skeleton
        if not isinstance(name, str):  # protobuf hands back bytes for a name that is not UTF-8
            raise SourceError(f"{path}: weight name {name!r:.80} is not UTF-8")
        if name in tensors:
            raise SourceError(f"{path}: two weights are named {name!r}")
        tensors[name] = tensor_from_proto(name, proto, f"{path}: ")
        fields[name] = _field(proto)
        for field in _DATA_FIELDS:
            proto.ClearField(field)
    metadata = {SKELETON_KEY: base64.b64encode(model.SerializeToString()).decode("ascii"),
                FIELDS_KEY: json.dumps(fields, separators=(",", ":"))}
    return SourceModel(tensors=tensors, metadata=metadata, format="onnx", files=(path,))


def onnx_model(tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str]) -> Any:
    """The ModelProto from a package's skeleton and its tensors (storage dtype, any shape)."""
    onnx = _onnx()
    if SKELETON_KEY not in metadata or FIELDS_KEY not in metadata:
        raise SourceError("the package metadata has no ONNX skeleton: it was not encoded from an .onnx file")
    model = onnx.ModelProto()
    model.ParseFromString(base64.b64decode(metadata[SKELETON_KEY]))
    fields = json.loads(metadata[FIELDS_KEY])
    for name, proto in weight_protos(model):
        if name in fields:
            if name not in tensors:
                raise SourceError(f"ONNX weight {name!r} is missing from the decoded tensors")
            fill_proto(proto, ONNX_DTYPES[proto.data_type], tensors[name], fields[name])
    return model


def write_onnx(path: Path, tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str]) -> None:
    """Write the `.onnx` file a package was encoded from (byte-identical at the exact rung)."""
    data = onnx_model(tensors, metadata).SerializeToString()
    with output_file(path) as out:
        out.write(data)
