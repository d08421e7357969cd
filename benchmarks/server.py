"""Server hardening, measured on 127.0.0.1 against the server before it (the same run). Prints a markdown table:

    .venv/bin/python benchmarks/server.py [--baseline 812aea9] [--out benchmarks/results/server.md]

1. abandoned downloads: N clients read the first 64 KiB of a MiniLM package paced at 100 Mbit/s and hang up;
   the server's open file descriptors 0.1, 0.5 and 1 s after the last one left
2. other clients: p50/p99 latency of 1 KiB Range requests, quiet and while 200 unpaced downloads are abandoned
3. a PUT of the MiniLM package with a 64 MiB manifest (a `source` field padded with a 640k-entry table): the
   longest stall other clients saw while it was received and verified, its answer, and the server's RSS after

Each server runs in a child process (as a server would), the baseline loaded from `git show REV:...server.py`
over today's helpers (its `parse_range`, `Pacer` and `PackageVerifier` are the same).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import bitladder
from bitladder.format.spec import HEADER_SIZE, MAX_MANIFEST_SIZE, Header, manifest_digest, pack_manifest, unpack_manifest

sys.path.insert(0, str(Path(__file__).parent))
from _baselines import _minilm_path  # noqa: E402

BASELINE = "812aea954e18e9abdb9c0a0d94185133b4aeb861"  # main before the hardening
CHILD = """
import importlib.util, subprocess, sys, uvicorn
which, root, port, rate, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
if which == "new":
    from bitladder.delivery.server import create_app
    app = create_app(root, token="t", rate=rate or None, max_manifest=limit)
else:
    source = subprocess.run(["git", "show", which + ":src/bitladder/delivery/server.py"], capture_output=True,
                            text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("bitladder.delivery._baseline_server", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "bitladder.delivery"
    sys.modules[spec.name] = module
    exec(compile(source, "baseline server.py", "exec"), module.__dict__)
    app = module.create_app(root, token="t", rate=rate or None)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="critical", backlog=2048)
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, which: str, root: Path, rate: float = 0.0, limit: int = 16 << 20) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, which, str(root), str(self.port), str(rate),
                                         str(limit)], cwd=Path(__file__).parent.parent)
        for _ in range(400):
            try:
                httpx.get(self.url + "/models", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_mb(self, field: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def abandon(port: int, count: int) -> None:
    """`count` downloads that read their first 64 KiB and hang up."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /models/minilm.blad HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 65536:
            got += len(sock.recv(65536))
        sockets.append(sock)
    for sock in sockets:
        sock.close()


def fds_after_abandoning(which: str, root: Path, count: int) -> list[int]:
    server = Server(which, root, rate=100e6)
    try:
        time.sleep(0.5)  # the start-up probe's connection closes
        quiet = server.fds()
        abandon(server.port, count)
        left = time.monotonic()
        counts = []
        for at in (0.1, 0.5, 1.0):
            time.sleep(max(0.0, left + at - time.monotonic()))
            counts.append(server.fds() - quiet)
        return counts
    finally:
        server.stop()


def probe(url: str, seconds: float, gaps: list[float] | None = None) -> list[float]:
    """Latencies (ms) of back-to-back 1 KiB Range requests for `seconds`."""
    latencies = []
    with httpx.Client(timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            client.get(url + "/models/small.blad", headers={"Range": "bytes=0-1023"}).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1e3)
            time.sleep(0.005)
    return latencies


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")  # type: ignore[call-overload]


def latency(which: str, root: Path, count: int) -> dict[str, float]:
    server = Server(which, root)
    try:
        probe(server.url, 0.5)
        quiet = probe(server.url, 3.0)
        thread = threading.Thread(target=abandon, args=(server.port, count))
        thread.start()
        loaded = probe(server.url, 3.0)
        thread.join()
        return {"quiet50": _p(quiet, 50), "quiet99": _p(quiet, 99), "load50": _p(loaded, 50),
                "load99": _p(loaded, 99)}
    finally:
        server.stop()


def big_manifest(package: Path, out: Path, target: int = MAX_MANIFEST_SIZE) -> Path:
    """`package` with its manifest's JSON padded (a random text in `source`, which zstd cannot shrink below about
    0.8 of its length) to just under `target` bytes."""
    data = package.read_bytes()
    header = Header.unpack(data[:HEADER_SIZE])
    manifest = unpack_manifest(data[HEADER_SIZE:HEADER_SIZE + header.manifest_length])
    text_size = len(json.dumps(manifest, separators=(",", ":")).encode())
    alphabet = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_`{|}~ "
    rng = random.Random(0)
    manifest["source"]["padding"] = "".join(rng.choices(alphabet, k=target - text_size - 4096))
    body = pack_manifest(manifest)
    out.write_bytes(Header(len(body), manifest_digest(body)).pack() + body + data[HEADER_SIZE + header.manifest_length:])
    return out


def put_stall(which: str, root: Path, upload: Path, limit: int) -> dict[str, Any]:
    server = Server(which, root, limit=limit)
    try:
        before = server.rss_mb()
        done = threading.Event()
        latencies: list[float] = []

        def watch() -> None:
            with httpx.Client(timeout=120) as client:
                while not done.is_set():
                    started = time.perf_counter()
                    client.get(server.url + "/models/small.blad", headers={"Range": "bytes=0-1023"})
                    latencies.append((time.perf_counter() - started) * 1e3)
                    time.sleep(0.005)

        thread = threading.Thread(target=watch)
        thread.start()
        time.sleep(0.3)
        started = time.perf_counter()
        try:
            with upload.open("rb") as body:
                status: str = str(httpx.put(server.url + "/models/big.blad", content=body,
                                            headers={"Authorization": "Bearer t"}, timeout=300).status_code)
        except httpx.TransportError as exc:
            status = f"closed ({type(exc).__name__})"
        seconds = time.perf_counter() - started
        time.sleep(1.0)
        done.set()
        thread.join()
        return {"status": status, "seconds": seconds, "stall": max(latencies), "rss_before": before,
                "rss_after": server.rss_mb(), "peak": server.rss_mb("VmHWM")}
    finally:
        server.stop()
        for leftover in root.glob("big.blad"):
            leftover.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the server to compare with")
    parser.add_argument("--abandoned", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "packages"
        root.mkdir()
        package = root / "minilm.blad"
        bitladder.encode(_minilm_path(), package, ladder="int8,exact", model_id="minilm")
        shutil.copy(package, root / "small.blad")
        upload = big_manifest(package, Path(folder) / "big.blad")
        accepted = big_manifest(package, Path(folder) / "accepted.blad", 16 << 20)
        runs: dict[str, dict[str, Any]] = {}
        for label, which, limit in (("baseline", args.baseline, MAX_MANIFEST_SIZE),
                                    ("this server", "new", 16 << 20),
                                    ("this server, limit 64 MiB", "new", MAX_MANIFEST_SIZE)):
            run: dict[str, Any] = {}
            if label != "this server, limit 64 MiB":
                run["fds"] = fds_after_abandoning(which, root, args.abandoned)
                run["latency"] = latency(which, root, 200)
            run["put"] = put_stall(which, root, upload, limit)
            if label == "this server":
                run["put16"] = put_stall(which, root, accepted, limit)
            runs[label] = run
            print(label, run, file=sys.stderr)
        table = _table(runs, args, package.stat().st_size, upload.stat().st_size)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


def _table(runs: dict[str, dict[str, Any]], args: argparse.Namespace, package_size: int, upload_size: int) -> str:
    labels = list(runs)
    rows = [f"| measure | {' | '.join(labels)} |", "|---|" + "---|" * len(labels)]

    def row(name: str, cell: Any) -> None:
        cells = []
        for label in labels:
            try:
                cells.append(cell(runs[label]))
            except KeyError:
                cells.append("-")
        rows.append(f"| {name} | {' | '.join(cells)} |")

    for index, at in enumerate(("0.1", "0.5", "1")):
        row(f"open fds {at} s after {args.abandoned} abandoned downloads (paced 100 Mbit/s)",
            lambda r, i=index: str(r["fds"][i]))
    row("p50 / p99 latency of others, quiet (ms)", lambda r: f"{r['latency']['quiet50']:.1f} / {r['latency']['quiet99']:.1f}")
    row("p50 / p99 latency during 200 abandoned downloads (ms)",
        lambda r: f"{r['latency']['load50']:.1f} / {r['latency']['load99']:.1f}")
    row("64 MiB-manifest PUT: answer", lambda r: f"{r['put']['status']} in {r['put']['seconds']:.2f} s")
    row("longest wait of another request during that PUT (ms)", lambda r: f"{r['put']['stall']:.0f}")
    row("server RSS before / after / peak (MB)",
        lambda r: f"{r['put']['rss_before']:.0f} / {r['put']['rss_after']:.0f} / {r['put']['peak']:.0f}")
    row("16 MiB-manifest PUT (the largest the default limit takes): answer",
        lambda r: f"{r['put16']['status']} in {r['put16']['seconds']:.2f} s")
    row("longest wait of another request during that PUT (ms)", lambda r: f"{r['put16']['stall']:.0f}")
    row("server RSS after / peak (MB)", lambda r: f"{r['put16']['rss_after']:.0f} / {r['put16']['peak']:.0f}")
    load = os.getloadavg()[0]
    return (f"Server hardening (benchmarks/server.py), baseline {args.baseline[:7]}; MiniLM package "
            f"{package_size / 1e6:.1f} MB, upload {upload_size / 1e6:.1f} MB with a 64 MiB manifest; "
            f"{os.cpu_count()} CPUs, load {load:.1f} at the end.\n\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
