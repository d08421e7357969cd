"""The `bitladder` command: keygen, encode, inspect, decode, serve, push, fetch, eval. The only module that prints or exits.

Every failure is one line on stderr and exit status 2; Ctrl-C is one line and 130. Outputs are written whole or
not at all (`bitladder.outputs`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__, api
from .cliargs import LADDER_HELP, RUNG_NAMES, add_trust, check_ladder, trust_of
from .codecs.entropy import DEFAULT_LEVEL
from .codecs.ladder import DEFAULT_LADDER, DEFAULT_MIN_SIZE, Ladder
from .delivery.commands import register as register_delivery
from .errors import BitladderError, UsageError
from .eval.commands import register as register_eval
from .format.reader import Package
from .format.signing import fingerprint, generate_keys, load_signing_key, public_key, signer
from .format.spec import Manifest
from .format.writer import SCHEDULES
from .outputs import STDOUT, check_not_older, check_output, write_model
from .sources import SourceModel, load_source

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DESCRIPTION = ("Progressive model delivery: a .blad package holds an inference-ready int8 (or lower) base first, "
               "then refinements up to the bit-exact source model.")
INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _progress() -> Progress:
    # Only on a terminal: elsewhere (a log, a pipe) a live display leaves a stray empty line.
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


def cmd_keygen(args: argparse.Namespace) -> None:
    key_path, pub_path = generate_keys(args.output)
    out.print(escape(f"signing key  {key_path}  (secret: keep it, mode 0600; encode --sign {key_path})"))
    out.print(escape(f"public key   {pub_path}  (give it to readers: --trust {pub_path})"))
    out.print(f"fingerprint  {fingerprint(public_key(load_signing_key(key_path)))}")


def cmd_encode(args: argparse.Namespace) -> None:
    check_ladder(args.ladder)
    signing_key = load_signing_key(args.sign) if args.sign else None  # before reading the model
    check_output(args.output)  # before reading the model
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("encoding", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"encoding {name[-40:]}")

        source: str | SourceModel = args.source
        sensitivity, calibration = None, ""
        if args.calibrate and Ladder.parse(args.ladder).target is None:  # before minutes of measuring
            raise UsageError(f"--calibrate weights a target first rung (e.g. 12%,int8,exact); ladder {args.ladder} "
                             "has none")
        if args.calibrate:
            source = load_source(args.source)  # once, for the measurement and the encoding
            sensitivity, calibration = _sensitivity(args.calibrate, source, bar)
        manifest = api.encode(source, args.output, ladder=args.ladder, group_size=args.group_size,
                              min_size=args.min_size, model_id=args.model_id, model_version=args.model_version,
                              schedule=args.schedule, level=args.level, progress=report, sign=signing_key,
                              sensitivity=sensitivity, calibration=calibration)
    seconds = time.perf_counter() - started
    size = len(manifest.encode()) + manifest.data_length
    signed = "" if signing_key is None else f", signed by {fingerprint(public_key(signing_key))}"
    console.print(escape(f"wrote {args.output}: {size:,} bytes, {len(manifest.tensors)} tensors, "
                         f"ladder {','.join(manifest.ladder.names)}{signed}, in {seconds:.1f} s"))


def _sensitivity(task_name: str, source: SourceModel, bar: Progress) -> tuple[dict[str, float], str]:
    """`--calibrate TASK`: each tensor's measured task sensitivity, and what it was measured on."""
    try:
        from .eval.rd import calibration_name, sensitivities
        from .eval.tasks import float_state, get_task
    except ImportError as exc:
        raise UsageError(f"--calibrate needs the eval extra (pip install 'bitladder[eval]'): {exc}") from exc
    bar.add_task(f"measuring the sensitivity of each tensor on {task_name}", total=None)
    state = float_state(source)
    with tempfile.TemporaryDirectory() as tmp:  # where the mtcnn and tiny tasks write their weights
        try:
            task = get_task(task_name, Path(tmp))
        except ValueError as exc:
            raise UsageError(f"--calibrate: {exc}") from exc
        try:
            return sensitivities(task, state), calibration_name(task)
        except ValueError as exc:  # the source is not the task's model: it lacks some of its tensors
            raise UsageError(f"--calibrate {task_name}: {exc}") from exc


def _rung_rows(manifest: Manifest) -> list[dict[str, Any]]:
    source_bytes = max(sum(t.nbytes for t in manifest.tensors), 1)
    tensors_per_rung = Counter(rung for rung, _ in {(chunk.rung, chunk.tensor) for chunk in manifest.chunks})
    rows, cumulative = [], 0
    quality = manifest.quality or (None,) * len(manifest.ladder.rungs)
    for index, (rung, size) in enumerate(zip(manifest.ladder.rungs, manifest.rung_bytes(), strict=False)):
        cumulative += size
        rows.append({"name": rung.name, "bytes": size, "percent_of_source": round(100 * size / source_bytes, 4),
                     "cumulative_percent": round(100 * cumulative / source_bytes, 4),
                     "tensors": tensors_per_rung.get(index, 0), "quality_db": quality[index]})
    return rows


def _lineage_line(manifest: Manifest) -> str:
    parent = manifest.parent
    if parent is None:
        return "lineage    full package (no parent)"
    return f"lineage    delta from {parent.describe()}, applies to its {parent.rung} rung"


def _tensor_rows(manifest: Manifest) -> list[dict[str, Any]]:
    names, last = manifest.ladder.names, len(manifest.ladder.rungs) - 1
    per_rung = [[0] * len(names) for _ in manifest.tensors]
    exact_at: list[int | None] = [None] * len(manifest.tensors)
    for chunk in manifest.chunks:
        per_rung[chunk.tensor][chunk.rung] += chunk.length
        at = exact_at[chunk.tensor]
        if chunk.reaches == last and (at is None or chunk.rung < at):
            exact_at[chunk.tensor] = chunk.rung
    return [{"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), "bytes": spec.nbytes,
             "rung_bytes": dict(zip(names, sizes, strict=True)),
             "exact_at": None if at is None else names[at], "cell_width": spec.factor or None}
            for spec, sizes, at in zip(manifest.tensors, per_rung, exact_at, strict=True)]


def rung_table(package: Package) -> Table:
    """Per rung: bytes, share of the source, cumulative share, tensors delivered in it, SQNR measured at encode
    time ("exact" for a lossless rung, "-" where none was measured)."""
    manifest = package.manifest
    table = Table(title=escape(f"{manifest.model_id} v{manifest.model_version}"))
    for column in ("rung", "bytes", "% of source", "cumulative %", "tensors", "SQNR dB"):
        table.add_column(column, justify="left" if column == "rung" else "right")
    for row, rung in zip(_rung_rows(manifest), manifest.ladder.rungs, strict=True):
        sqnr = f"{row['quality_db']:.1f}" if row["quality_db"] is not None else "exact" if rung.kind == "exact" else "-"
        table.add_row(row["name"], f"{row['bytes']:,}", f"{row['percent_of_source']:.2f}",
                      f"{row['cumulative_percent']:.2f}", str(row["tensors"]), sqnr)
    return table


def tensor_table(package: Package) -> Table:
    """Per tensor: dtype, shape, source bytes, package bytes in each rung, and the rung at which it is exact."""
    names = package.manifest.ladder.names
    widths = package.manifest.ladder.target is not None  # a target first rung: each tensor's allocated cell width
    table = Table(title="tensors")
    for column in ("tensor", "dtype", "shape", "bytes", *(("cell width",) if widths else ()), *names, "exact at"):
        table.add_column(column, justify="left" if column in ("tensor", "dtype", "shape", "exact at") else "right")
    for row in _tensor_rows(package.manifest):
        width = (str(row["cell_width"] or "-"),) if widths else ()
        table.add_row(escape(row["name"]), row["dtype"], "x".join(map(str, row["shape"])) or "scalar",
                      f"{row['bytes']:,}", *width, *(f"{row['rung_bytes'][n]:,}" for n in names),
                      row["exact_at"] or "-")
    return table


def inspect_json(package: Package, tensors: bool, trusted: bool | None = None) -> dict[str, Any]:
    """What `inspect` shows, as one JSON object (`--json`); `tensors` adds the per-tensor rows; `trusted` says
    whether the signature was checked against `--trust` (None: not checked)."""
    manifest = package.manifest
    report: dict[str, Any] = {
        "model_id": manifest.model_id, "model_version": manifest.model_version,
        "signed": package.header.signed, "key": signer(package.header), "trusted": trusted,
        "weights": manifest.weights or None,
        "parent": None if manifest.parent is None else {
            "id": manifest.parent.model_id, "version": manifest.parent.version, "weights": manifest.parent.weights,
            "rung": manifest.parent.rung},
        "source": {"format": manifest.source.get("format"), "digest": manifest.source.get("digest"),
                   "bytes": sum(t.nbytes for t in manifest.tensors),
                   "dtypes": dict(sorted(Counter(t.dtype for t in manifest.tensors).items()))},
        "package_bytes": package.data_start + manifest.data_length, "header_bytes": package.data_start,
        "schedule": manifest.schedule, "allocation": manifest.allocation or None, "rungs": _rung_rows(manifest)}
    if tensors:
        report["tensors"] = _tensor_rows(manifest)
    return report


def _signature_line(package: Package, trusted: bool) -> str:
    key = signer(package.header)
    if key is None:
        return "signature  none (unsigned)"
    return f"signature  {key}, " + ("verified against --trust" if trusted else "not checked (give --trust KEY.pub)")


def cmd_inspect(args: argparse.Namespace) -> None:
    trust = trust_of(args)
    package = Package.open(args.package, trust=trust)  # a refused signature fails here
    if args.json:
        report = inspect_json(package, args.tensors, None if trust is None else True)
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return
    manifest = package.manifest
    dtypes = Counter(t.dtype for t in manifest.tensors)
    source_bytes = sum(t.nbytes for t in manifest.tensors)
    lines = [f"model      {manifest.model_id}  version {manifest.model_version}",
             f"source     {manifest.source.get('format', '?')}, {source_bytes:,} bytes, "
             f"dtypes {', '.join(f'{d} x{n}' for d, n in sorted(dtypes.items()))}",
             f"digest     {manifest.source.get('digest', '?')}",
             f"weights    {manifest.weights or '?'}",
             _lineage_line(manifest),
             f"package    {package.data_start + manifest.data_length:,} bytes "
             f"(header and manifest {package.data_start:,}), schedule {manifest.schedule}",
             _signature_line(package, trust is not None)]
    if manifest.allocation:
        widths = [t.factor for t in manifest.tensors if t.factor]
        lines.append(f"allocation {manifest.allocation}; first-rung cell widths {min(widths, default=0)}..."
                     f"{max(widths, default=0)} codes of the next int rung over {len(widths)} tensors "
                     "(--tensors shows each)")
    for line in lines:
        out.print(escape(line))
    out.print(rung_table(package))
    if args.tensors:
        out.print(tensor_table(package))


def cmd_decode(args: argparse.Namespace) -> None:
    trust = trust_of(args)
    package = Package.open(args.package, trust=trust)
    manifest = package.manifest
    rung = manifest.rung_index(args.rung or None)
    check_output(args.output)  # before decoding
    check_not_older(args.output, manifest, args.allow_downgrade)
    name = manifest.ladder.rungs[rung].name
    status = console.status(f"decoding at rung {name}") if console.is_terminal else contextlib.nullcontext()
    with status:
        tensors = package.decode(rung)
        written = write_model(args.output, manifest, tensors, signer=None if trust is None else signer(package.header),
                              allow_downgrade=args.allow_downgrade)
    where = "stdout" if args.output == STDOUT else args.output
    console.print(escape(f"wrote {where}: {len(tensors)} tensors ({written}) at rung {name}"))


def cmd_diff(args: argparse.Namespace) -> None:
    check_output(args.output)
    started = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("coding the update", total=None)

        def report(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"coding {name[-40:]}")

        manifest = api.diff(args.old, args.new, args.output, version=args.model_version, model_id=args.model_id,
                            parent_version=args.parent_version,
                            approximate_bits=None if args.approximate_bits == 0 else args.approximate_bits,
                            level=args.level, progress=report, sign=args.sign, trust=trust_of(args))
    seconds = time.perf_counter() - started
    assert manifest.parent is not None  # a diff always makes a delta
    sizes = ", ".join(f"{rung.name} {size:,}" for rung, size in zip(manifest.ladder.rungs, manifest.rung_bytes(), strict=True))
    changed = len({chunk.tensor for chunk in manifest.chunks if chunk.length})
    console.print(escape(f"wrote {args.output}: {manifest.model_id} {manifest.parent.version} -> {manifest.model_version}, "
                         f"{len(manifest.encode()) + manifest.data_length:,} bytes ({sizes}); {changed} of "
                         f"{len(manifest.tensors)} tensors changed or new; in {seconds:.1f} s"))


def cmd_patch(args: argparse.Namespace) -> None:
    check_output(args.output)
    manifest, tensors = api.patch(args.old, args.update, trust=trust_of(args))
    written = write_model(args.output, manifest, tensors)
    where = "stdout" if args.output == STDOUT else args.output
    console.print(escape(f"wrote {where}: {manifest.model_id} version {manifest.model_version}, {len(tensors)} tensors "
                         f"({written}), bit-exact (weights {manifest.weights[:23]}…)"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitladder", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"bitladder {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make an Ed25519 key pair for signing packages")
    keygen.add_argument("-o", "--output", required=True,
                        help="name prefix: writes PREFIX.key (secret, mode 0600) and PREFIX.pub; never overwrites")
    keygen.set_defaults(run=cmd_keygen)

    encode = commands.add_parser("encode", help="encode a model into a progressive .blad package")
    encode.add_argument("source", help=".safetensors file, Hugging Face folder, .pt/.pth/.bin state dict, or .onnx")
    encode.add_argument("-o", "--output", required=True, help="package to write (.blad)")
    encode.add_argument("--ladder", default=DEFAULT_LADDER, help=f"{LADDER_HELP} (default {DEFAULT_LADDER})")
    encode.add_argument("--group-size", type=int, default=0, help="inputs per scale for int rungs (0: per channel)")
    encode.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE,
                        help=f"tensors with fewer elements go exact in the first rung (default {DEFAULT_MIN_SIZE})")
    encode.add_argument("--model-id", help="model id recorded in the package (default: output file stem)")
    encode.add_argument("--model-version", default="1", help="model version recorded in the package (default 1)")
    encode.add_argument("--schedule", choices=sorted(SCHEDULES), default="source",
                        help="order of chunks within a rung")
    encode.add_argument("--level", type=int, default=DEFAULT_LEVEL, help=f"zstd level (default {DEFAULT_LEVEL})")
    encode.add_argument("--sign", metavar="KEY.key", help="sign the package with this key (from bitladder keygen)")
    encode.add_argument("--calibrate", metavar="TASK", help="allocate a target first rung by each tensor's measured "
                        "sensitivity on TASK's calibration set (minilm, mobilenetv2, or a model folder as for eval); "
                        "needs the eval extra")
    encode.set_defaults(run=cmd_encode)

    inspect = commands.add_parser("inspect", help="show a package's rungs and sizes")
    inspect.add_argument("package", help="package file (.blad)")
    inspect.add_argument("--tensors", action="store_true", help="also show each tensor's bytes per rung")
    inspect.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    add_trust(inspect, "show")
    inspect.set_defaults(run=cmd_inspect)

    decode = commands.add_parser("decode", help="write the model at a rung (safetensors, or ONNX for ONNX sources)")
    decode.add_argument("package", help="package file (.blad)")
    decode.add_argument("-o", "--output", required=True, help="file to write (.safetensors, or .onnx); - for stdout")
    decode.add_argument("--rung", help=f"rung name, one of the package's ({RUNG_NAMES}); default: the last")
    add_trust(decode, "decode", downgrade=True)
    decode.set_defaults(run=cmd_decode)

    diff = commands.add_parser("diff", help="code the update from an old model to a new one as a progressive delta package")
    diff.add_argument("old", help="the model devices hold: a full .blad package or a model file")
    diff.add_argument("new", help="the new version: a model file or a full .blad package")
    diff.add_argument("-o", "--output", required=True, help="delta package to write (.blad)")
    diff.add_argument("--model-version", required=True, help="version of the new model recorded in the update")
    diff.add_argument("--model-id", help="model id (default: the old package's, or the output file stem)")
    diff.add_argument("--parent-version", help="version of OLD when it is a model file (a package records its own)")
    diff.add_argument("--approximate-bits", type=int, default=8,
                      help="precision of the first, approximate rung in bits of each tensor's scale, as intN (default 8; "
                           "0: no approximate rung)")
    diff.add_argument("--level", type=int, default=DEFAULT_LEVEL, help=f"zstd level (default {DEFAULT_LEVEL})")
    diff.add_argument("--sign", metavar="KEY.key", help="sign the update with this key (from bitladder keygen)")
    add_trust(diff, "read OLD and NEW packages")
    diff.set_defaults(run=cmd_diff)

    patch = commands.add_parser("patch", help="apply a delta package to the old model: the new one, bit-exact")
    patch.add_argument("old", help="the model the update was made from: a full .blad package or a model file")
    patch.add_argument("update", help="delta package (.blad) from bitladder diff")
    patch.add_argument("-o", "--output", required=True, help="file to write (.safetensors, or .onnx); - for stdout")
    add_trust(patch, "apply")
    patch.set_defaults(run=cmd_patch)

    register_delivery(commands)
    register_eval(commands)
    return parser


def _stdout_gone() -> None:
    """stdout was closed under us (`| head`): send what is left to /dev/null so the exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        written = "; no output was written" if args.command in ("encode", "decode", "fetch") else ""
        console.print(f"interrupted: bitladder {args.command} stopped{written}")
        return INTERRUPTED
    except BrokenPipeError:
        _stdout_gone()
        return 2
    except (BitladderError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        console.print(f"[red]error:[/red] {escape(message)}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
