"""Source-reader fuzzer: mutated real model files through `bitladder.encode(path, out)`; no input may escape typed.

    python benchmarks/fuzz_sources.py [--count 10000] [--workers 1] [--seed 0] [--sources safetensors,folder,torch,onnx]
    python benchmarks/fuzz_sources.py --repro SOURCE INDEX [--seed 0] [--write DIR]   # one input, with its traceback

Four sources, each with real seeds (benchmarks/_source_mutators.py): a safetensors file (MiniLM tensors in F32,
F16 and BF16), a Hugging Face folder sharded with `model.safetensors.index.json` (MiniLM), PyTorch state dicts
(MTCNN's P-Net as shipped, in the legacy format; MobileNetV2 tensors in a zip `.pth`; the same in bf16 under
`{"state_dict", "meta"}` as a `.bin`), and ONNX (the first layers of RapidOCR's classifier, weights in `Constant`
nodes or in initializers). Input i of a source is class i % classes applied to seed (i // classes) % seeds with a
generator seeded from (--seed, source, i), so a source and an index are their own repro. Each input's files are
written to a scratch folder and encoded with `bitladder.encode(path, out)` (which reads them with `load_source`).

Per input: ok (encoded), typed (a BitladderError), untyped (any other exception, or a worker that died), hang (over
--timeout seconds; a worker silent for 30 s is killed), memory (a MemoryError or an allocator failure anywhere in
the error's chain, a tracemalloc peak over 2x the clean seed's scaled by the input's size, or the worker's peak
RSS rising more than 256 MiB on the input: torch and protobuf allocate outside tracemalloc). Prints the tables and
writes them to benchmarks/results/fuzz_sources.md.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
import tracemalloc
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _pool import Pool, raise_site  # noqa: E402
from _source_mutators import MUTATIONS, SEEDS, Files, SourceSeed  # noqa: E402

import bitladder  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz_sources.md"
MEMORY_FACTOR = 2.0
RSS_RISE = 256 << 10  # KiB
ADDRESS_HEADROOM = 4 << 30  # per worker, above what it maps at fork: a runaway allocation fails instead of swapping
ALLOCATOR_FAILURES = ("can't allocate memory", "DefaultCPUAllocator", "Unable to allocate", "out of memory")
LADDER = "int8,exact"


@dataclass
class Result:
    source: str
    index: int
    cls: str
    seed: str
    verdict: str                      # ok, typed, untyped, hang, memory
    seconds: float = 0.0
    ratio: float = 0.0                # tracemalloc peak / the clean seed's, scaled by size
    error: str = ""                   # the exception's class (typed and untyped)
    detail: str = ""                  # where and what, for untyped, hang and memory
    repro: str = ""


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 20:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _verdict(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    chain = _chain(exc)
    if any(isinstance(e, MemoryError) or any(s in str(e) for s in ALLOCATOR_FAILURES) for e in chain):
        return "memory"
    return "typed" if isinstance(exc, bitladder.BitladderError) else "untyped"


def write_files(folder: Path, files: Files) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def encode_files(files: Files, entry: str, scratch: Path) -> BaseException | None:
    """Write the files into a fresh folder under `scratch` and encode them; the error, if one was raised."""
    folder = scratch / "in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_files(folder, files)
    out = scratch / "out.blad"
    if not out.is_symlink():  # the package goes to /dev/null: the readers are judged here, not the writer
        out.symlink_to(os.devnull)
    try:
        bitladder.encode(folder / entry if entry != "." else folder, out, ladder=LADDER)
        return None
    except Exception as exc:  # noqa: BLE001 - classifying every escape is the point
        return exc


@dataclass(frozen=True)
class Campaign:
    """What defines every input of a run: each source's seeds, the base seed; and how to judge one."""

    seeds: dict[str, list[SourceSeed]]
    peaks: dict[str, int]            # tracemalloc peak of encoding each clean seed
    base: int = 0
    timeout: float = 5.0

    def mutated(self, source: str, index: int) -> tuple[str, SourceSeed, Files, str]:
        classes = list(MUTATIONS[source])
        rng = random.Random(f"{self.base}:{source}:{index}")
        cls = classes[index % len(classes)]
        seed = self.seeds[source][(index // len(classes)) % len(self.seeds[source])]
        files, what = MUTATIONS[source][cls](seed, rng)
        return cls, seed, files, what

    def evaluate(self, source: str, index: int, scratch: Path, traced: bool = True) -> Result:
        cls, seed, files, what = self.mutated(source, index)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if traced:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        error = encode_files(files, seed.entry, scratch)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - before if traced else 0
        verdict = _verdict(error)
        name = type(error).__name__ if error is not None else ""
        detail = f"{name} at {raise_site(error)}: {str(error)[:200]}" if error is not None else ""
        del error  # its traceback holds the frames of the failed parse
        size = sum(len(b) for b in files.values()) / sum(len(b) for b in seed.files.values())
        ratio = peak / (self.peaks[seed.name] * max(1.0, size))
        rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
        if verdict != "untyped" and (ratio > MEMORY_FACTOR or rise > RSS_RISE):
            verdict = "memory"
            detail = f"{detail}; tracemalloc {ratio:.1f}x the clean seed's, RSS +{rise >> 10} MiB".lstrip("; ")
        if verdict != "untyped" and seconds > self.timeout:
            verdict, detail = "hang", f"{seconds:.1f} s; {detail}"
        return Result(source, index, cls, seed.name, verdict, seconds, ratio, name, detail, what)


def measure_peaks(seeds: dict[str, list[SourceSeed]], scratch: Path) -> dict[str, int]:
    """Encode each clean seed under tracemalloc (after a first, untraced encode warms the imports)."""
    tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    peaks = {}
    for group in seeds.values():
        for seed in group:
            error = encode_files(seed.files, seed.entry, scratch)
            if error is not None:
                raise RuntimeError(f"seed {seed.name} does not encode: {type(error).__name__}: {error}")
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            encode_files(seed.files, seed.entry, scratch)
            peaks[seed.name] = tracemalloc.get_traced_memory()[1] - before
    if not tracing:
        tracemalloc.stop()
    return peaks


def campaign(sources: tuple[str, ...], base: int = 0, timeout: float = 5.0) -> Campaign:
    seeds = {source: SEEDS[source]() for source in sources}
    with tempfile.TemporaryDirectory() as scratch:
        peaks = measure_peaks(seeds, Path(scratch))
    return Campaign(seeds, peaks, base, timeout)


def _worker(conn: Connection, plan: Campaign) -> None:
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + ADDRESS_HEADROOM, resource.RLIM_INFINITY))
    warnings.simplefilter("ignore")  # torch's deprecation notes, once per odd input
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as scratch:
        while (task := conn.recv()) is not None:
            source, index = task
            try:
                conn.send(plan.evaluate(source, index, Path(scratch)))
            except Exception as exc:  # noqa: BLE001 - a bug of the harness itself, not a finding
                conn.send(Result(source, index, "?", "?", "harness", detail=f"{type(exc).__name__} at {raise_site(exc)}: {exc}"))


def fuzz(sources: tuple[str, ...], count: int, workers: int = 1, base: int = 0, timeout: float = 5.0,
         kill: float = 30.0) -> tuple[list[Result], float]:
    """`count` inputs per source over `workers` processes; every result, and the seconds it took."""
    plan = campaign(sources, base, timeout)
    start = time.perf_counter()

    def lost(task: tuple[str, int], why: str, hung: bool) -> Result:
        cls, seed, _, what = plan.mutated(*task)
        return Result(task[0], task[1], cls, seed.name, "hang" if hung else "untyped", kill, 0, "", why, what)

    tasks = ((source, index) for index in range(count) for source in sources)
    pool = Pool(lambda conn: _worker(conn, plan), lost, kill, max(1, workers))
    results = []
    for result in pool.run(tasks):  # type: ignore[arg-type]
        results.append(result)
        if len(results) % 5000 == 0:
            sys.stderr.write(f"{len(results)} of {count * len(sources)} inputs, {time.perf_counter() - start:.0f} s\n")
    broken = [r for r in results if r.verdict == "harness"]
    if broken:
        raise RuntimeError(f"the fuzzer failed on {len(broken)} inputs, e.g. {broken[0].source} {broken[0].index}: "
                           f"{broken[0].detail}")
    results.sort(key=lambda r: (r.source, r.index))
    return results, time.perf_counter() - start


def run_inline(plan: Campaign, source: str, indexes: range, scratch: Path) -> list[Result]:
    """Inputs in this process, without tracemalloc (the bounded run of tests/sources/test_fuzz.py)."""
    return [plan.evaluate(source, index, scratch, traced=False) for index in indexes]


def table(results: list[Result], sources: tuple[str, ...]) -> str:
    lines = ["| source | class | inputs | accepted | typed | untyped | hangs | memory | max ms | max peak / clean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for source in sources:
        mine = [r for r in results if r.source == source]
        groups = defaultdict(list)
        for result in mine:
            groups[result.cls].append(result)
        for cls, group in [*((c, groups[c]) for c in MUTATIONS[source] if groups[c]), ("all", mine)]:
            verdicts = Counter(r.verdict for r in group)
            label = f"**{source}**" if cls == "all" else source
            lines.append(f"| {label} | {cls} | {len(group)} | {verdicts['ok']} | {verdicts['typed']} | "
                         f"{verdicts['untyped']} | {verdicts['hang']} | {verdicts['memory']} | "
                         f"{1000 * max(r.seconds for r in group):.0f} | {max(r.ratio for r in group):.2f}x |")
    return "\n".join(lines)


def errors(results: list[Result]) -> str:
    """Exception classes per source and verdict (the typed ones show which checks refused the inputs)."""
    counts = Counter((r.source, r.verdict, r.error) for r in results if r.error)
    lines = ["| source | verdict | exception class | inputs |", "|---|---|---|---|"]
    lines += [f"| {s} | {v} | {e} | {n} |" for (s, v, e), n in sorted(counts.items(), key=lambda x: (x[0][0], -x[1]))]
    return "\n".join(lines)


def failures(results: list[Result], limit: int = 40) -> str:
    bad = [r for r in results if r.verdict in ("untyped", "hang", "memory")]
    groups: dict[str, list[Result]] = defaultdict(list)
    for result in bad:
        site = result.detail.split(": ", 1)[0]
        groups[f"{result.source} {result.verdict} {site}"].append(result)
    lines = []
    for group in sorted(groups.values(), key=len, reverse=True)[:limit]:
        first = group[0]
        lines.append(f"- {first.source} {first.verdict} x{len(group)}: {first.detail[:240]}; first repro: "
                     f"--repro {first.source} {first.index} ({first.cls}, seed {first.seed!r}: {first.repro[:140]})")
    return "\n".join(lines) or "none"


def report(results: list[Result], seconds: float, sources: tuple[str, ...], count: int, base: int, workers: int,
           timeout: float, plan_seeds: dict[str, list[str]]) -> str:
    verdicts = Counter(r.verdict for r in results)
    seeds = "; ".join(f"{s}: {', '.join(names)}" for s, names in plan_seeds.items())
    return "\n".join([
        "# benchmarks/fuzz_sources.py — latest output", "",
        f"{count} mutated inputs per source ({len(results)} in all, seed {base}), each written to a scratch folder and "
        f"encoded with `bitladder.encode(path, out, ladder={LADDER!r})`; {workers} worker process(es), {seconds:.0f} s. "
        f"A hang is an input over {timeout:g} s; memory is a MemoryError or allocator failure, a tracemalloc peak over "
        f"{MEMORY_FACTOR:g}x the clean seed's (scaled by the input's size), or a worker's peak RSS rising over "
        f"{RSS_RISE >> 10} MiB on one input. Seeds (real models) — {seeds}.", "",
        table(results, sources), "",
        f"Targets: 0 untyped (got {verdicts['untyped']}), 0 hangs (got {verdicts['hang']}), 0 memory "
        f"(got {verdicts['memory']}).", "",
        "Failures by kind (`python benchmarks/fuzz_sources.py --repro SOURCE INDEX` replays one with its traceback):", "",
        failures(results), "",
        "Exception classes:", "",
        errors(results), "",
    ])


def repro(source: str, index: int, base: int, write: Path | None) -> None:
    plan = campaign((source,), base)
    cls, seed, files, what = plan.mutated(source, index)
    print(f"{source} input {index}: class {cls!r}, seed {seed.name!r}: {what}")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        error = encode_files(files, seed.entry, Path(scratch))
        print(f"encode: {_verdict(error)} in {time.perf_counter() - start:.3f} s")
        if error is not None:
            traceback.print_exception(error)
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        write_files(write, files)
        print(f"files written to {write} (entry {seed.entry})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="inputs per source")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds over which an input counts as a hang")
    parser.add_argument("--sources", default=",".join(SEEDS))
    parser.add_argument("--repro", nargs=2, metavar=("SOURCE", "INDEX"))
    parser.add_argument("--write", type=Path, help="with --repro: write the mutated files into this folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.repro is not None:
        repro(args.repro[0], int(args.repro[1]), args.seed, args.write)
        return
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    unknown = set(sources) - set(SEEDS)
    if unknown:
        raise SystemExit(f"unknown sources {sorted(unknown)}; known: {list(SEEDS)}")
    results, seconds = fuzz(sources, args.count, args.workers, args.seed, args.timeout)
    names = {s: [seed.name for seed in SEEDS[s]()] for s in sources}
    text = report(results, seconds, sources, args.count, args.seed, args.workers, args.timeout, names)
    args.out.write_text(text)
    print(text)
    verdicts = Counter(r.verdict for r in results)
    sys.exit(1 if verdicts["untyped"] or verdicts["hang"] else 0)


if __name__ == "__main__":
    main()
