"""CLI subcommands `serve`, `push`, `fetch`; `register(subparsers)` adds them to the `bitladder` parser.

Errors are raised (BitladderError subclasses), never turned into exits here; cli.py's `main` reports them.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.markup import escape as escape_text

from ..cliargs import add_trust, trust_of
from ..format.reader import Package, StreamDecoder
from ..format.signing import signer
from ..outputs import check_not_older, check_output, write_model
from .choice import FLOAT_DTYPES, Budget, Choice, parse_size
from .client import Download
from .errors import AuthError, ConfigError, DeliveryError
from .link import PROFILES, Link, ShapedTransport, make_link, parse_duration, parse_rate

log = logging.getLogger(__name__)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read token file {args.token_file}: {exc}") from exc
    return os.environ.get("BITLADDER_TOKEN") or None


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a bad host or port is one error, not a server's traceback."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a TCP port is 0..65535 (0: any free port)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .server import create_app

    root = Path(args.directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    rate = parse_rate(args.rate) if args.rate else None
    app = create_app(root, token=_token(args), protect_reads=args.protect_reads, rate=rate, trust=trust_of(args))
    sock = _listen(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = sock.getsockname()[:2]
    log.info("serving %s on http://%s:%d/models (Ctrl-C to stop)", root, f"[{host}]" if ":" in host else host, port)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=port, log_level="info"))
    with sock:
        server.run(sockets=[sock])


def push_url(url: str, name: str) -> str:
    """Where `push` PUTs a package called `name`.

    >>> push_url("http://h:8000", "m.blad"), push_url("http://h/pkgs/", "m.blad"), push_url("http://h/x.blad", "m.blad")
    ('http://h:8000/models/m.blad', 'http://h/pkgs/m.blad', 'http://h/x.blad')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} is not an http(s) URL")
    if parts.path.endswith(".blad"):
        return url
    server = parts.path in ("", "/") and not parts.query  # a bitladder server's address: its /models folder
    folder = "/models" if server else parts.path.rstrip("/")  # else a folder, with or without its final /
    return urlunsplit(parts._replace(path=f"{folder}/{name}"))


def _refusal(response: httpx.Response) -> str:
    """The server's reason for an error answer: its JSON `error`, else the start of its text."""
    try:
        body = response.json()
        reason = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        reason = None
    text = str(reason or response.text)
    return " ".join(text.split())[:300]


def cmd_push(args: argparse.Namespace) -> None:
    from rich.console import Console

    token = _token(args)
    if token is None:
        raise AuthError("push needs a token: --token-file F or BITLADDER_TOKEN")
    console = Console(stderr=True, soft_wrap=True)
    if args.delta_from is not None:
        _push_delta(args, token, console)
        return
    for option in _DELTA_OPTIONS:
        if getattr(args, option) is not None:
            raise ConfigError(f"--{option.replace('_', '-')} goes with --delta-from VERSION (it shapes the delta)")
    path = Path(args.package)
    Package.open(path, trust=trust_of(args))  # a missing file or a non-package fails here, before any request
    url = push_url(args.url, path.name)
    console.print(escape_text(f"published {url}: {path.stat().st_size:,} bytes{_upload(path, url, token)}"))


_DELTA_OPTIONS = ("model_version", "base", "model_id", "name", "approximate_bits", "sign")


def _push_delta(args: argparse.Namespace, token: str, console: Any) -> None:
    """NEW coded against the server's (or --base's) --delta-from version, then PUT as a package."""
    from .deltapush import delta_upload

    if args.model_version is None:
        raise ConfigError(f"--delta-from {args.delta_from} needs --model-version: the version the fine-tuned "
                          "weights become")
    folder = push_url(args.url, "_.blad").rsplit("/", 1)[0]  # where the server lists its packages (GET /models)
    bits = 8 if args.approximate_bits is None else args.approximate_bits or None
    with delta_upload(args.package, folder, delta_from=args.delta_from, version=args.model_version, token=token,
                      base=args.base, model_id=args.model_id, name=args.name, approximate_bits=bits, sign=args.sign,
                      trust=trust_of(args)) as delta:
        url = push_url(args.url, delta.name)
        size = delta.path.stat().st_size
        etag = _upload(delta.path, url, token)
    manifest = delta.manifest
    rungs = ", ".join(f"{rung.name} {nbytes:,}" for rung, nbytes in zip(manifest.ladder.rungs, manifest.rung_bytes(),
                                                                         strict=True))
    console.print(escape_text(f"published {url}: delta {manifest.model_id!r} {args.delta_from} -> "
                              f"{manifest.model_version}, {size:,} bytes ({rungs}), {size / delta.replaces:.1%} of "
                              f"the {delta.replaces:,} bytes of {Path(args.package).name} it stands for{etag}"))


def _upload(path: Path, url: str, token: str) -> str:
    """PUT the package `path` to `url`; returns ", etag …" from the server's answer ("" without one)."""
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while piece := handle.read(1 << 20):
                yield piece

    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(size)}
    try:
        response = httpx.put(url, content=body(), headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{url}: upload failed: {exc or type(exc).__name__}") from exc
    status = f"{response.status_code} {response.reason_phrase}".strip()
    reason = _refusal(response)
    if response.status_code == 401 or response.status_code == 403 and not reason:
        raise AuthError(f"{url}: the server refused the token ({status}){': ' + reason if reason else ''}")
    if not response.is_success:
        raise DeliveryError(f"{url}: upload refused ({status}){': ' + reason if reason else ''}")
    try:
        return f", etag {response.json()['etag']}"
    except (ValueError, KeyError, TypeError):
        return ""  # a plain HTTP server (nginx WebDAV) answers without a catalog entry


def _check_link_options(args: argparse.Namespace) -> None:
    """--rtt and --loss shape an emulated --rate or --trace link; a --profile has its own."""
    for option, value in (("--rtt", args.rtt), ("--loss", args.loss)):
        if value is None:
            continue
        if args.profile:
            raise ConfigError(f"{option} goes with --rate or --trace; profile {args.profile} sets its own")
        if not (args.rate or args.trace):
            raise ConfigError(f"{option} goes with --rate or --trace (it shapes an emulated link)")


def cmd_fetch(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    _check_link_options(args)
    loss = () if args.loss is None else (args.loss,)  # unset: make_link keeps its default (a profile's own loss)
    link = make_link(args.profile, args.rate, args.rtt, args.trace, *loss)
    check_output(args.output)  # before downloading anything
    transport: httpx.BaseTransport = httpx.HTTPTransport()
    if link is not None:
        transport = ShapedTransport(transport, link)
    trust = trust_of(args)
    budget = _budget(args, link)
    if args.base is None:
        download = Download(args.url, rung=args.rung, transport=transport, token=_token(args), trust=trust, budget=budget)
    else:  # an update: the delta decodes from the weights the device holds
        from ..api import load_model

        parent, _ = load_model(args.base, trust)
        download = Download(args.url, rung=args.rung, transport=transport, token=_token(args), budget=budget,
                            sink=StreamDecoder(trust=trust, parent=parent))
    console = Console(stderr=True, soft_wrap=True)
    started, shown, checked = time.monotonic(), 0, False
    told: Choice | None = None
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("manifest", total=None)
        for _ in download:
            if told is None and download.choice is not None:
                _show_choice(bar.console, told := download.choice)
            if not checked and download.decoder.manifest is not None:  # refuse a downgrade before the rest comes
                check_not_older(args.output, download.decoder.manifest, args.allow_downgrade)
                checked = True
            names = download.sink.manifest.ladder.names if download.sink.manifest else []
            reached = download.decoder.rung
            bar.update(task, completed=download.sink.position, total=download.target(),
                       description=f"rung {names[reached] if reached >= 0 else '-'}")
            shown = _show_rungs(bar.console, download, shown, started)
        if told is None and download.choice is not None:
            _show_choice(bar.console, download.choice)
        shown = _show_rungs(bar.console, download, shown, started)
    header = download.decoder.header
    written = _write(download.decoder, args.output, None if trust is None or header is None else signer(header),
                     args.allow_downgrade)
    console.print(escape_text(f"wrote {args.output} ({written}); {download.stats.received:,} bytes received, "
                              f"{download.stats.reconnects} reconnects, {download.stats.refetches} re-fetched chunks"))


_BUDGET_OPTIONS = ("max_bytes", "max_memory", "dtype", "link_rate", "deadline")


def _budget(args: argparse.Namespace, link: Link | None) -> Budget | None:
    """The budget the fetch options give (None: none given); the link rate defaults to an emulated link's."""
    if all(getattr(args, option) is None for option in _BUDGET_OPTIONS):
        return None
    if args.rung:
        raise ConfigError(f"--rung {args.rung} names the rung; --max-bytes, --max-memory, --dtype, --link-rate and "
                          "--deadline choose it: give one or the other")
    rate = parse_rate(args.link_rate) if args.link_rate else (link.rate if link is not None and link.rate > 0 else None)
    if args.deadline is not None and rate is None:
        raise ConfigError(f"--deadline {args.deadline} needs --link-rate (or an emulated --rate or --profile) to "
                          "know how many bytes arrive by then")
    return Budget(max_bytes=None if args.max_bytes is None else parse_size(args.max_bytes),
                  max_memory=None if args.max_memory is None else parse_size(args.max_memory),
                  dtypes=None if args.dtype is None else frozenset(args.dtype), link_rate_bps=rate,
                  deadline_s=None if args.deadline is None else parse_duration(args.deadline))


def _show_choice(console: Any, choice: Choice) -> None:
    console.print(escape_text(f"chose {choice.summary()}"))
    for line in choice.reason:
        console.print(escape_text(f"  {line}"))


def _show_rungs(console: Any, download: Download, shown: int, started: float) -> int:
    """Print each rung once, when it verifies; returns how many are printed."""
    for event in download.events[shown:]:
        if event.verified is None:
            break
        console.print(f"rung {event.name}: verified at byte {event.end:,}, {time.monotonic() - started:.1f} s")
        shown += 1
    return shown


def _write(decoder: StreamDecoder, output: str, key: str | None, allow_downgrade: bool) -> str:
    manifest = decoder.manifest
    if manifest is None:
        raise DeliveryError("nothing was downloaded")
    return write_model(output, manifest, decoder.tensors(), signer=key, allow_downgrade=allow_downgrade)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `serve`, `push` and `fetch` to the `bitladder` command."""
    token_help = "file holding the bearer token (default: the BITLADDER_TOKEN variable)"
    serve = subparsers.add_parser("serve", help="serve every .blad in a folder over HTTP (Starlette/uvicorn)")
    serve.add_argument("directory", help="folder of .blad packages, served as /models/NAME.blad")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port, 0..65535 (default 8000; 0: any free port)")
    serve.add_argument("--token-file", help=f"{token_help}; required for PUT (and for reads with --protect-reads); "
                                            "without one, uploads are refused")
    serve.add_argument("--protect-reads", action="store_true", help="require the token for GET/HEAD too")
    serve.add_argument("--rate", help="pace each response, e.g. 100mbit (demos on one machine)")
    add_trust(serve, "accept uploads of", note=", and so is an older version of a model id the folder holds")
    serve.set_defaults(run=cmd_serve)

    push = subparsers.add_parser("push", help="publish a package to a server (HTTP PUT), or fine-tuned weights as "
                                              "a delta against the server's version (--delta-from)")
    push.add_argument("package", help="package file (.blad) to upload; with --delta-from, the fine-tuned model (a "
                                      "model file or a full package)")
    push.add_argument("url", help="http://HOST:PORT (goes to /models/NAME.blad), a folder URL (ending in /: the "
                                  "file name is appended), or the full .../NAME.blad URL")
    push.add_argument("--token-file", help=token_help)
    delta = push.add_argument_group("delta", "send PACKAGE as a delta against a version the server holds; the "
                                             "server checks its lineage (and its signature, if it serves with --trust: see --sign) "
                                             "before listing it")
    delta.add_argument("--delta-from", metavar="VERSION", help="the server's version the weights were tuned from "
                                                               "(downloaded exact unless --base is given)")
    delta.add_argument("--model-version", help="the version the fine-tuned weights become (required with --delta-from)")
    delta.add_argument("--base", metavar="FILE", help="that version held here (a package or a model file), instead "
                                                      "of downloading it")
    delta.add_argument("--model-id", help="model id (default: a package's own, or the only one the server holds at "
                                          "VERSION)")
    delta.add_argument("--name", help="name to publish the delta as (default ID-VERSION-to-NEWVERSION.blad)")
    delta.add_argument("--approximate-bits", type=int, help="precision of the first, approximate rung in bits of each "
                                                            "tensor's scale, as intN (default 8; 0: exact only)")
    delta.add_argument("--sign", metavar="KEY.key", help="sign the delta with this key (from bitladder keygen)")
    add_trust(push, "push, and code deltas against,")
    push.set_defaults(run=cmd_push)

    fetch = subparsers.add_parser("fetch", help="download a package progressively and write the model")
    fetch.add_argument("url", help="http(s) URL of a package, e.g. http://127.0.0.1:8000/models/NAME.blad")
    fetch.add_argument("-o", "--output", required=True,
                       help="file to write: safetensors (ONNX for an ONNX source); - for stdout")
    fetch.add_argument("--rung", help="stop after this rung (downloads only its bytes); default: the last, or the "
                                      "one a budget below chooses")
    budget = fetch.add_argument_group("budget", "choose the highest rung that fits (not with --rung); fetch says "
                                                "what it chose and why")
    budget.add_argument("--max-bytes", help="bytes to download at most, e.g. 30M, 1.5GB, 2GiB")
    budget.add_argument("--max-memory", help="memory for the decoded tensors (source dtypes), e.g. 512M")
    budget.add_argument("--dtype", action="append", type=str.upper, choices=FLOAT_DTYPES,
                        help="a float dtype the device computes in (repeatable), e.g. --dtype F16 --dtype BF16")
    budget.add_argument("--link-rate", help="the link's rate for --deadline, e.g. 20M (20 Mbit/s); default: an "
                                            "emulated --rate or --profile's")
    budget.add_argument("--deadline", help="seconds by which the download must end, e.g. 10 or 500ms")
    fetch.add_argument("--token-file", help=f"{token_help}; for servers run with --protect-reads")
    fetch.add_argument("--base", metavar="OLD", help="for a delta package (an update from bitladder diff): the model "
                                                     "it applies to, a full .blad package or a model file")
    link = fetch.add_mutually_exclusive_group()
    link.add_argument("--rate", help="emulate a link of this rate, e.g. 50mbit")
    link.add_argument("--trace", help="emulate a link following a CSV of time_s,bit_per_s")
    link.add_argument("--profile", choices=sorted(PROFILES), help="a named link profile (its own rate and RTT)")
    fetch.add_argument("--rtt", help="emulated round-trip time, e.g. 30ms (only with --rate or --trace)")
    fetch.add_argument("--loss", type=float,
                       help="probability of a stall per 16 KiB piece (only with --rate or --trace)")
    add_trust(fetch, "fetch", downgrade=True)
    fetch.set_defaults(run=cmd_fetch)
