"""ONNX Runtime: serve an `.onnx` model whose weights (initializers, `Constant` nodes) come from a package.

Two ways to swap weights, measured in `benchmarks/runtime.py`:

* `mode="rebuild"`: each swap builds a new `InferenceSession` with the weights baked in (outside the lock;
  the swap itself is a pointer move). Full ORT optimizations at every rung; a swap costs a session build.
* `mode="inputs"`: refined weights become graph inputs fed on every run, so a swap is a dict update; ORT
  cannot fold or pre-pack them, so inference is slower until the last rung, where the session is rebuilt
  with every weight baked in (so the final outputs are the original model's, bit for bit).

>>> session = ProgressiveSession("det.blad")                      # graph from the package   # doctest: +SKIP
>>> boxes, = session.run(None, {"x": image})                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..codecs.states import STORAGE, TensorSpec, is_float
from ..delivery.choice import Budget
from ..format.reader import StreamDecoder
from ..format.signing import Trust
from ..format.spec import Manifest
from ..sources.onnx import ONNX_DTYPES, SKELETON_KEY, fill_proto, weight_protos
from .core import ApplyMode, ProgressiveRuntime, RuntimeFacade, Update
from .errors import ModelMismatchError, SourceUnavailableError
from .feed import DEFAULT_PIECE, Source

SwapMode = Literal["rebuild", "inputs"]
_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def _modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise SourceUnavailableError(f"the ONNX runtime adapter needs onnx and onnxruntime ({exc})") from exc
    return onnx, onnxruntime


class OnnxAdapter:
    """Weights of one ONNX graph; stages a new session (rebuild) or a new feed dict (inputs)."""

    def __init__(self, model: str | os.PathLike[str] | bytes | None, mode: SwapMode,
                 providers: Sequence[str], options: Any | None) -> None:
        self._onnx, self._ort = _modules()
        self._model_arg = model
        self._mode = mode
        self._providers = list(providers)
        self._options = options
        self._graph: Any = None
        self._names: list[str] = []
        self._live: set[str] = set()
        self._top = 0
        self._inputs_session: Any = None
        self.session: Any = None
        self.feeds: dict[str, NDArray[Any]] = {}
        self.current: dict[str, NDArray[Any]] = {}
        self.build_seconds: list[float] = []

    def bind(self, manifest: Manifest) -> None:
        if self._model_arg is None:
            self._graph = _skeleton(self._onnx, manifest)
        elif isinstance(self._model_arg, bytes):
            self._graph = self._onnx.load_from_string(self._model_arg)
        else:
            self._graph = self._onnx.load(os.fspath(self._model_arg), load_external_data=False)
        self._names = [name for name, proto in weight_protos(self._graph) if proto.data_type in ONNX_DTYPES]
        self._top = len(manifest.ladder.rungs) - 1
        specs = manifest.specs
        if self._mode == "inputs":
            self._live = {n for n in self._names if n in specs and is_float(specs[n].dtype)
                          and specs[n].numel >= manifest.ladder.min_size and self._top > 0}

    def names(self) -> Collection[str]:
        return self._names

    def check(self, spec: TensorSpec) -> None:
        proto = dict(weight_protos(self._graph))[spec.name]
        if tuple(proto.dims) != spec.shape or ONNX_DTYPES[proto.data_type] != spec.dtype:
            raise ModelMismatchError(f"ONNX weight {spec.name!r}: package {spec.dtype}{list(spec.shape)}, graph "
                                     f"{ONNX_DTYPES[proto.data_type]}{list(proto.dims)}")

    def prepare(self, spec: TensorSpec, decoder: StreamDecoder) -> NDArray[Any]:
        """The tensor as ONNX Runtime takes it: float32/16/64 values, other dtypes (bf16 too) as storage."""
        if spec.dtype in _NUMPY:
            return decoder.values(spec.name).astype(_NUMPY[spec.dtype], copy=False)
        return decoder.tensor(spec.name, raw=True)

    def nbytes(self, prepared: NDArray[Any]) -> int:
        return int(prepared.nbytes)

    def stage(self, batch: dict[str, NDArray[Any]], lowest: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        current = {**self.current, **batch}
        start = time.perf_counter()
        if self._mode == "rebuild" or lowest >= self._top:
            session, feeds = self._session(current, set()), {}
        else:
            session = self._inputs_session or self._session(current, self._live)
            feeds = {name: current[name] for name in self._live}
        self.build_seconds.append(time.perf_counter() - start)
        return session, feeds, current

    def commit(self, staged: tuple[Any, dict[str, Any], dict[str, Any]]) -> Any:
        retired = (self.session, self.current)
        session, self.feeds, self.current = staged
        if self.feeds:
            self._inputs_session = session
        self.session = session
        return retired

    def _session(self, weights: dict[str, NDArray[Any]], live: set[str]) -> Any:
        graph = self._onnx.ModelProto()
        graph.CopyFrom(self._graph)
        for name, proto in weight_protos(graph):
            if name in weights and name not in live:
                dtype = ONNX_DTYPES[proto.data_type]
                fill_proto(proto, dtype, weights[name].reshape(-1).view(STORAGE[dtype]), "raw_data")
        if live:
            _weights_as_inputs(self._onnx, graph, live)
        return self._ort.InferenceSession(graph.SerializeToString(), self._options, providers=self._providers)


def _skeleton(onnx: Any, manifest: Manifest) -> Any:
    metadata = manifest.source.get("metadata") or {}

    if SKELETON_KEY not in metadata:
        raise ModelMismatchError(f"package {manifest.model_id!r} carries no ONNX graph; pass the .onnx model")
    graph = onnx.ModelProto()
    graph.ParseFromString(base64.b64decode(metadata[SKELETON_KEY]))
    return graph


def _weights_as_inputs(onnx: Any, graph: Any, live: set[str]) -> None:
    """Turn the `live` initializers and Constant nodes into graph inputs of the same type and shape."""
    protos = dict(weight_protos(graph))
    for name in sorted(live):
        proto = protos[name]
        graph.graph.input.append(onnx.helper.make_tensor_value_info(name, proto.data_type, list(proto.dims)))
    kept_inits = [init for init in graph.graph.initializer if init.name not in live]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept_inits)
    kept_nodes = [node for node in graph.graph.node if not (node.op_type == "Constant" and node.output[0] in live)]
    del graph.graph.node[:]
    graph.graph.node.extend(kept_nodes)


class ProgressiveSession(RuntimeFacade):
    """An ONNX Runtime session that serves from the first rung and refines itself in the background.

    `model` is the `.onnx` file (with or without its weights); None takes the graph from the package.
    """

    def __init__(self, source: Source, model: str | os.PathLike[str] | bytes | None = None,
                 apply: ApplyMode | str = ApplyMode.ATOMIC, mode: SwapMode = "rebuild", *,
                 providers: Sequence[str] = ("CPUExecutionProvider",), session_options: Any | None = None,
                 on_update: Callable[[Update], None] | None = None, piece_size: int = DEFAULT_PIECE,
                 model_id: str | None = None, model_version: str | None = None, trust: Trust | None = None,
                 allow_downgrade: bool = False, budget: Budget | None = None) -> None:
        if mode not in ("rebuild", "inputs"):
            raise ValueError(f"mode must be 'rebuild' or 'inputs', got {mode!r}")
        if mode == "rebuild" and apply == "incremental":
            raise ValueError("mode='rebuild' builds a session per swap: use apply='atomic' (or mode='inputs')")
        self.adapter = OnnxAdapter(model, mode, providers, session_options)
        self.runtime = ProgressiveRuntime(self.adapter, source, apply=apply, on_update=on_update,
                                          piece_size=piece_size, model_id=model_id, model_version=model_version,
                                          trust=trust, allow_downgrade=allow_downgrade, budget=budget)

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> list[Any]:
        """Like `InferenceSession.run`; never runs during a swap."""
        return self.run_with_rung(output_names, input_feed)[0]

    def run_with_rung(self, output_names: Sequence[str] | None, input_feed: dict[str, Any]) -> tuple[list[Any], int]:
        with self.runtime.reading() as rung:
            session, feeds = self.adapter.session, self.adapter.feeds
            return session.run(output_names, {**input_feed, **feeds} if feeds else input_feed), rung

    def call_with_rung(self, input_feed: dict[str, Any]) -> tuple[list[Any], int]:
        return self.run_with_rung(None, input_feed)

