"""Fixtures: small packages in tmp_path and real uvicorn servers on 127.0.0.1 (free ports, stopped after)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

import bitladder
from bitladder.delivery.server import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn in a thread; `stop()` drops in-flight connections (force exit), `start()` serves again."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app, self.port = app, port or free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical",
                                timeout_graceful_shutdown=0, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.force_exit = True
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None


def wait_until_serving(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until `url` answers; skip the test if `process` (nginx, varnishd) exits or never answers."""
    for _ in range(200):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None:
                pytest.skip(f"{what} did not start: {process.stderr.read().decode()[:300]}")  # type: ignore[union-attr]
            time.sleep(0.05)
    pytest.skip(f"{what} did not answer")


def arrays(seed: int = 0, rows: int = 96) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a.weight": rng.standard_normal((rows, 256)).astype(np.float32),
        "b.weight": rng.standard_normal((rows, 128)).astype(np.float32),
        "b.bias": rng.standard_normal(128).astype(np.float32),
        "c.weight": (rng.standard_normal((rows, 64)) * 3).astype(np.float16),
    }


def make_package(path: Path, seed: int = 0, rows: int = 96) -> Path:
    bitladder.encode(arrays(seed, rows), path, ladder="int8,exact", model_id=path.stem, model_version=str(seed))
    return path


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    root = tmp_path / "packages"
    root.mkdir()
    make_package(root / "small.blad")
    return root


@pytest.fixture
def server(package_dir: Path) -> Iterator[ServerThread]:
    running = ServerThread(create_app(package_dir, token="s3cret")).start()
    yield running
    running.stop()


def serve_bytes(data: bytes, etag: str = '"v1"') -> Any:
    """A MockTransport handler answering single Range / If-Range requests from `data` (no network)."""
    import httpx

    from bitladder.delivery.httputil import RangeNotSatisfiable, parse_range

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        wanted, if_range = request.headers.get("range"), request.headers.get("if-range")
        if wanted is None or (if_range is not None and if_range != etag):
            return httpx.Response(200, headers=headers, content=data)
        try:
            part = parse_range(wanted, len(data))
        except RangeNotSatisfiable:
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {part.start}-{part.end - 1}/{len(data)}"
        return httpx.Response(206, headers=headers, content=data[part.start:part.end])

    return handler


def bit_exact(decoder: Any, path: Path) -> bool:
    want = bitladder.open(path).decode()
    got = decoder.tensors()
    return got.keys() == want.keys() and all(
        got[k].dtype == v.dtype and got[k].tobytes() == v.tobytes() for k, v in want.items())
