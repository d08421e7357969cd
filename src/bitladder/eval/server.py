"""A real package server on 127.0.0.1 for the eval: the bitladder app, plus `/files/` for the baselines.

uvicorn runs in a thread on a free port; `/models/*.blad` is `bitladder.delivery.server.create_app`, and
`/files/*` serves the same folder as plain static files (the fp32, zstd, ZipNN and NNCodec baselines).

>>> with LocalServer(Path("files")) as server:                # doctest: +SKIP
...     httpx.get(f"{server.url}/files/fp32.bin").content
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..delivery.server import create_app
from ..errors import BitladderError

_START_TIMEOUT = 10.0


class ServerStartError(BitladderError):
    """uvicorn did not come up on 127.0.0.1."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """Serve `root` on 127.0.0.1 while the `with` block runs."""

    def __init__(self, root: Path) -> None:
        app = create_app(root)
        app.router.routes.append(Mount("/files", app=StaticFiles(directory=str(root))))
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical",
                                timeout_graceful_shutdown=0, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="bitladder-eval-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ServerStartError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._server.force_exit = True
        self._server.should_exit = True
        self._thread.join(timeout=10)
