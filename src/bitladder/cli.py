"""The `bitladder` command: encode, inspect, decode, serve, push, fetch, eval. The only module that prints or exits."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import api
from .codecs.entropy import DEFAULT_LEVEL
from .codecs.ladder import DEFAULT_LADDER, DEFAULT_MIN_SIZE
from .delivery.commands import register as register_delivery
from .errors import BitladderError
from .eval.commands import register as register_eval
from .format.reader import Package
from .format.writer import SCHEDULES
from .sources import write_safetensors

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def cmd_encode(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("encoding", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"encoding {name[-40:]}")

        manifest = api.encode(args.source, args.output, ladder=args.ladder, group_size=args.group_size,
                              min_size=args.min_size, model_id=args.model_id, model_version=args.model_version,
                              schedule=args.schedule, level=args.level, progress=report)
    seconds = time.perf_counter() - started
    size = Path(args.output).stat().st_size
    console.print(f"wrote {args.output}: {size:,} bytes, {len(manifest.tensors)} tensors, "
                  f"ladder {','.join(manifest.ladder.names)}, in {seconds:.1f} s")


def rung_table(package: Package) -> Table:
    """Per rung: bytes, share of the source, cumulative share, tensors delivered in it."""
    manifest = package.manifest
    source_bytes = sum(t.nbytes for t in manifest.tensors)
    tensors_per_rung = Counter(chunk.rung for chunk in manifest.chunks)
    table = Table(title=f"{manifest.model_id} v{manifest.model_version}")
    for column in ("rung", "bytes", "% of source", "cumulative %", "tensors"):
        table.add_column(column, justify="left" if column == "rung" else "right")
    cumulative = 0
    for index, (rung, size) in enumerate(zip(manifest.ladder.rungs, manifest.rung_bytes(), strict=False)):
        cumulative += size
        table.add_row(rung.name, f"{size:,}", f"{100 * size / max(source_bytes, 1):.2f}",
                      f"{100 * cumulative / max(source_bytes, 1):.2f}", str(tensors_per_rung.get(index, 0)))
    return table


def cmd_inspect(args: argparse.Namespace) -> None:
    package = Package.open(args.package)
    manifest = package.manifest
    dtypes = Counter(t.dtype for t in manifest.tensors)
    source_bytes = sum(t.nbytes for t in manifest.tensors)
    out.print(f"model      {manifest.model_id}  version {manifest.model_version}")
    out.print(f"source     {manifest.source.get('format', '?')}, {source_bytes:,} bytes, "
              f"dtypes {', '.join(f'{d} x{n}' for d, n in sorted(dtypes.items()))}")
    out.print(f"digest     {manifest.source.get('digest', '?')}")
    out.print(f"package    {package.data_start + manifest.data_length:,} bytes "
              f"(header and manifest {package.data_start:,}), schedule {manifest.schedule}")
    out.print(rung_table(package))


def cmd_decode(args: argparse.Namespace) -> None:
    package = Package.open(args.package)
    manifest = package.manifest
    rung = manifest.ladder.index(args.rung) if args.rung else len(manifest.ladder.rungs) - 1
    with console.status(f"decoding at rung {manifest.ladder.rungs[rung].name}"):
        tensors = package.decode(rung)
    if manifest.source.get("format") == "onnx":
        from .sources.onnx import write_onnx

        write_onnx(Path(args.output), tensors, manifest.source.get("metadata") or {})
        console.print(f"wrote {args.output}: ONNX model at rung {manifest.ladder.rungs[rung].name}")
        return
    specs = {t.name: t for t in manifest.tensors}
    write_safetensors(Path(args.output), {name: (specs[name].dtype, array) for name, array in tensors.items()},
                      manifest.source.get("metadata") or None)
    console.print(f"wrote {args.output}: {len(tensors)} tensors at rung {manifest.ladder.rungs[rung].name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitladder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser("encode", help="encode a model into a progressive .blad package")
    encode.add_argument("source", help=".safetensors file, Hugging Face folder, .pt/.pth/.bin state dict, or .onnx")
    encode.add_argument("-o", "--output", required=True, help="package to write (.blad)")
    encode.add_argument("--ladder", default=DEFAULT_LADDER, help=f"rungs in order (default {DEFAULT_LADDER})")
    encode.add_argument("--group-size", type=int, default=0, help="inputs per scale for int rungs (0: per channel)")
    encode.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE,
                        help=f"tensors with fewer elements go exact in the first rung (default {DEFAULT_MIN_SIZE})")
    encode.add_argument("--model-id", help="model id recorded in the package (default: output file stem)")
    encode.add_argument("--model-version", default="1")
    encode.add_argument("--schedule", choices=sorted(SCHEDULES), default="source",
                        help="order of chunks within a rung")
    encode.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="zstd level")
    encode.set_defaults(run=cmd_encode)

    inspect = commands.add_parser("inspect", help="show a package's rungs and sizes")
    inspect.add_argument("package")
    inspect.set_defaults(run=cmd_inspect)

    decode = commands.add_parser("decode", help="write the model at a rung (safetensors, or ONNX for ONNX sources)")
    decode.add_argument("package")
    decode.add_argument("-o", "--output", required=True, help="file to write (.safetensors, or .onnx)")
    decode.add_argument("--rung", help="rung name (default: the last)")
    decode.set_defaults(run=cmd_decode)

    register_delivery(commands)
    register_eval(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (BitladderError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
