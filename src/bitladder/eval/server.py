"""A real package server on 127.0.0.1 for the eval: the bitladder app, plus `/files/` for the baselines.

uvicorn runs in a child process on a free port, as a server would on its own machine: in this process it would
share the interpreter lock with the device's link, decoder and model, and slow what is being measured.
`/models/*.blad` is `bitladder.delivery.server.create_app`, and `/files/*` serves the same folder as plain
static files (the fp32, zstd, ZipNN and NNCodec baselines).

>>> with LocalServer(Path("files")) as server:                # doctest: +SKIP
...     httpx.get(f"{server.url}/files/fp32.bin").content
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..delivery.server import create_app
from ..errors import BitladderError

_START_TIMEOUT = 20.0
_ROOT_VARIABLE = "BITLADDER_EVAL_ROOT"


class ServerStartError(BitladderError):
    """uvicorn did not come up on 127.0.0.1."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eval_app() -> Starlette:
    """The app the child process serves (a uvicorn factory; the folder comes in an environment variable)."""
    root = Path(os.environ[_ROOT_VARIABLE])
    app = create_app(root)
    app.router.routes.append(Mount("/files", app=StaticFiles(directory=str(root))))
    return app


class LocalServer:
    """Serve `root` on 127.0.0.1 while the `with` block runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalServer:
        command = [sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:eval_app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "critical", "--lifespan", "off",
                   "--timeout-graceful-shutdown", "0"]
        env = {**os.environ, _ROOT_VARIABLE: str(self.root)}
        self._process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._listening():
            if time.monotonic() > deadline or self._process.poll() is not None:
                error = self._stop()
                raise ServerStartError(f"uvicorn did not start on port {self.port}: {error[-500:]}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _stop(self) -> str:
        if self._process is None:
            return ""
        self._process.terminate()
        try:
            _, error = self._process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, error = self._process.communicate()
        self._process = None
        return error.decode(errors="replace")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop()
