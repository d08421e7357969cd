"""The framer: the one state machine under the decoder and the verifier; bounded memory, verify-only mode."""

import tracemalloc

import blake3
import numpy as np
import pytest

import bitladder
from bitladder import ChunkIntegrityError, DecoderStateError
from bitladder.format.framer import Chunk, Framer
from bitladder.format.spec import ChunkHasher, digest

PIECE = 64 * 1024


@pytest.fixture(scope="module")
def big_package(tmp_path_factory) -> bytes:
    """A package whose chunks are each much larger than a piece."""
    out = tmp_path_factory.mktemp("framer") / "big.blad"
    weight = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)
    ladder = bitladder.Ladder.parse("int8,exact", block_size=1 << 19)  # one block: chunks of 0.4 and 1.4 MB
    bitladder.encode({"w": weight}, out, ladder=ladder, model_id="big")
    return out.read_bytes()


def _index(chunk: Chunk) -> int:
    return chunk.index


def _peak_while_feeding(framer: Framer, data: bytes) -> tuple[list[int], int]:
    view = memoryview(data)
    tracemalloc.start()
    try:
        indices = []
        for start in range(0, len(data), PIECE):
            indices += framer.feed(view[start:start + PIECE], _index).raise_for_error()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    framer.close()
    return indices, peak


def test_verify_only_never_buffers_a_chunk(big_package):
    framer = Framer(keep_payload=False)
    indices, peak = _peak_while_feeding(framer, big_package)
    assert framer.manifest is not None and indices == list(range(len(framer.manifest.chunks)))
    smallest = min(c.length for c in framer.manifest.chunks)
    assert peak < 128 * 1024 < smallest / 3  # the head and the hasher's staging block, never a chunk


def test_kept_payload_is_bounded_by_the_chunk_in_flight(big_package):
    framer = Framer()
    indices, peak = _peak_while_feeding(framer, big_package)
    largest = max(c.length for c in framer.manifest.chunks)  # type: ignore[union-attr]
    assert indices == list(range(len(framer.manifest.chunks)))  # type: ignore[union-attr]
    assert largest < peak < 1.25 * largest + 256 * 1024


def test_a_chunk_inside_one_piece_is_handed_over_without_a_copy(big_package):
    seen = []

    def accept(chunk: Chunk) -> int:
        assert chunk.payload is not None
        seen.append(chunk.payload.obj is big_package)
        return chunk.index

    Framer().feed(big_package, accept).raise_for_error()
    assert seen and all(seen)


def test_payloads_match_the_package_bytes_for_any_split(big_package):
    package = bitladder.open(big_package)
    rng = np.random.default_rng(3)
    cuts = sorted({0, len(big_package), *rng.integers(0, len(big_package), 30).tolist()})
    framer = Framer()
    got = {}

    def accept(chunk: Chunk) -> int:
        assert chunk.payload is not None
        got[chunk.index] = bytes(chunk.payload)
        return chunk.index

    for start, end in zip(cuts, cuts[1:], strict=False):
        framer.feed(big_package[start:end], accept).raise_for_error()
    framer.close()
    assert got == {i: bytes(package.chunk_bytes(i)) for i in range(len(package.manifest.chunks))}


@pytest.mark.parametrize("keep", [True, False])
def test_rewind_mid_chunk_and_after_a_bad_chunk(big_package, keep):
    framer = Framer(keep_payload=keep)
    first = framer.feed(big_package[:len(big_package) // 2], _index).raise_for_error()
    assert framer.pending > 0
    assert framer.rewind() == framer.position and framer.pending == 0
    broken = bytearray(big_package[framer.position:])
    broken[-1] ^= 1
    fed = framer.feed(bytes(broken), _index)
    assert isinstance(fed.error, ChunkIntegrityError) and fed.error is framer.error
    with pytest.raises(DecoderStateError, match="rewind"):
        framer.feed(b"", _index)
    resume = framer.rewind()
    assert framer.error is None
    last = framer.feed(big_package[resume:], _index).raise_for_error()
    framer.close()
    assert [*first, *fed.updates, *last] == list(range(len(framer.manifest.chunks)))  # type: ignore[union-attr]


def test_a_chunk_that_accept_refuses_is_not_accepted(big_package):
    def refuse(chunk: Chunk) -> int:
        raise ChunkIntegrityError(f"chunk {chunk.index}: refused")

    framer = Framer()
    fed = framer.feed(big_package, refuse)
    assert fed.updates == () and isinstance(fed.error, ChunkIntegrityError)
    assert framer.position == framer.data_start and framer.next_chunk == 0
    assert framer.rewind() == framer.data_start


def test_incremental_hasher_matches_digest_for_any_split():
    data = np.random.default_rng(5).bytes(300_000)
    for cuts in ([], [1], [1023, 1024, 1025], [70_000, 140_001], list(range(0, 300_000, 9_999))):
        hasher = ChunkHasher()
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=False):
            hasher.update(data[start:end])
        assert hasher.digest() == digest(data) == "blake3:" + blake3.blake3(data).hexdigest()
    hasher.reset()
    assert hasher.digest() == digest(b"")
