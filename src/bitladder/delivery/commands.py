"""CLI subcommands `serve`, `push`, `fetch`; `register(subparsers)` adds them to the `bitladder` parser.

Errors are raised (BitladderError subclasses), never turned into exits here; cli.py's `main` reports them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import httpx

from ..format.reader import StreamDecoder
from ..sources import write_safetensors
from .client import Download
from .errors import AuthError, ConfigError, DeliveryError
from .link import PROFILES, ShapedTransport, make_link, parse_rate


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read token file {args.token_file}: {exc}") from exc
    return os.environ.get("BITLADDER_TOKEN") or None


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .server import create_app

    root = Path(args.directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    rate = parse_rate(args.rate) if args.rate else None
    app = create_app(root, token=_token(args), protect_reads=args.protect_reads, rate=rate)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def cmd_push(args: argparse.Namespace) -> None:
    from rich.console import Console

    token = _token(args)
    if token is None:
        raise AuthError("push needs a token: --token-file F or BITLADDER_TOKEN")
    path = Path(args.package)
    url = args.url if args.url.endswith(".blad") else f"{args.url.rstrip('/')}/models/{path.name}"

    def body() -> object:
        with open(path, "rb") as handle:
            while piece := handle.read(1 << 20):
                yield piece

    response = httpx.put(url, content=body(), headers={"Authorization": f"Bearer {token}"}, timeout=60)  # type: ignore[arg-type]
    if response.status_code in (401, 403):
        raise AuthError(f"{url}: the server refused the token ({response.status_code})")
    if response.status_code not in (200, 201):
        raise DeliveryError(f"{url}: upload refused ({response.status_code}): {response.text[:300]}")
    entry = response.json()
    Console(stderr=True).print(f"published {url}: {entry['size']:,} bytes, etag {entry['etag']}")


def cmd_fetch(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    link = make_link(args.profile, args.rate, args.rtt, args.trace, args.loss)
    transport: httpx.BaseTransport = httpx.HTTPTransport()
    if link is not None:
        transport = ShapedTransport(transport, link)
    download = Download(args.url, rung=args.rung, transport=transport, token=_token(args))
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("manifest", total=None)
        for _ in download:
            names = download.sink.manifest.ladder.names if download.sink.manifest else []
            reached = download.decoder.rung
            bar.update(task, completed=download.sink.position, total=download.target(),
                       description=f"rung {names[reached] if reached >= 0 else '-'}")
    decoder = download.decoder
    _write(decoder, Path(args.output))
    for event in download.events:
        console.print(f"rung {event.name}: verified at byte {event.end:,}")
    console.print(f"wrote {args.output}; {download.stats.received:,} bytes received, "
                  f"{download.stats.reconnects} reconnects, {download.stats.refetches} re-fetched chunks")


def _write(decoder: StreamDecoder, output: Path) -> None:
    manifest = decoder.manifest
    if manifest is None:
        raise DeliveryError("nothing was downloaded")
    specs = {t.name: t for t in manifest.tensors}
    tensors = decoder.tensors()
    write_safetensors(output, {name: (specs[name].dtype, array) for name, array in tensors.items()},
                      manifest.source.get("metadata") or None)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `serve`, `push` and `fetch` to the `bitladder` command."""
    serve = subparsers.add_parser("serve", help="serve every .blad in a folder over HTTP (Starlette/uvicorn)")
    serve.add_argument("directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token-file", help="bearer token required for PUT (and reads with --protect-reads)")
    serve.add_argument("--protect-reads", action="store_true", help="require the token for GET/HEAD too")
    serve.add_argument("--rate", help="pace each response, e.g. 100mbit (demos on one machine)")
    serve.set_defaults(run=cmd_serve)

    push = subparsers.add_parser("push", help="publish a package to a server (HTTP PUT)")
    push.add_argument("package")
    push.add_argument("url", help="server URL, or the full .../models/NAME.blad URL")
    push.add_argument("--token-file")
    push.set_defaults(run=cmd_push)

    fetch = subparsers.add_parser("fetch", help="download a package progressively and write safetensors")
    fetch.add_argument("url")
    fetch.add_argument("-o", "--output", required=True, help="safetensors file to write")
    fetch.add_argument("--rung", help="stop after this rung (downloads only its bytes)")
    fetch.add_argument("--token-file")
    link = fetch.add_mutually_exclusive_group()
    link.add_argument("--rate", help="emulate a link of this rate, e.g. 50mbit")
    link.add_argument("--trace", help="emulate a link following a CSV of time_s,bit_per_s")
    link.add_argument("--profile", choices=sorted(PROFILES), help="a named link profile")
    fetch.add_argument("--rtt", help="emulated round-trip time, e.g. 30ms (with --rate or --trace)")
    fetch.add_argument("--loss", type=float, default=0.0, help="probability of a stall per 16 KiB piece")
    fetch.set_defaults(run=cmd_fetch)
