import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitladder
from bitladder import DecoderStateError, StreamDecoder, TruncatedError
from bitladder.codecs.ladder import Ladder
from bitladder.format.reader import _runs
from bitladder.format.spec import HEADER_SIZE

from .conftest import tiny_arrays
from .test_golden import GOLDEN


def test_one_byte_at_a_time(tiny_package):
    decoder = StreamDecoder()
    updates = []
    for i in range(len(tiny_package)):
        updates += decoder.feed(tiny_package[i:i + 1]).raise_for_error()
    decoder.close()
    assert decoder.finished and decoder.rung == 2
    assert [u.chunk for u in updates] == list(range(len(decoder.manifest.chunks)))
    for name, array in tiny_arrays().items():
        assert decoder.tensor(name).tobytes() == array.tobytes()


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 4096), max_size=20))
def test_any_split_gives_the_same_updates(cuts):
    package = GOLDEN.read_bytes()
    bounds = sorted({0, len(package), *[c % (len(package) + 1) for c in cuts]})
    decoder = StreamDecoder()
    updates = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        updates += decoder.feed(package[start:end]).raise_for_error()
    decoder.close()
    assert [u.chunk for u in updates] == list(range(len(decoder.manifest.chunks)))


def test_rung_progress_is_reported_per_tensor(tiny_package):
    decoder = StreamDecoder()
    manifest_end = HEADER_SIZE + int.from_bytes(tiny_package[8:16], "little")
    decoder.feed(tiny_package[:manifest_end])
    assert decoder.rung == -1 and set(decoder.rungs().values()) == {-1}
    first_rung_end = manifest_end + decoder.manifest.rung_end(0)
    decoder.feed(tiny_package[manifest_end:first_rung_end])
    assert decoder.rungs() == {"layer.weight": 0, "layer.bias": 2, "steps": 2}
    assert decoder.rung == 0
    weight = decoder.values("layer.weight")
    assert weight.shape == (8, 12) and np.abs(weight - tiny_arrays()["layer.weight"]).max() < 0.1
    with pytest.raises(TruncatedError):
        decoder.close()


def test_tensor_before_arrival_is_a_state_error(tiny_package):
    decoder = StreamDecoder()
    with pytest.raises(DecoderStateError):
        decoder.tensor("layer.weight")
    decoder.feed(tiny_package[:HEADER_SIZE + int.from_bytes(tiny_package[8:16], "little")])
    with pytest.raises(DecoderStateError):
        decoder.tensor("layer.weight")
    with pytest.raises(KeyError):
        decoder.tensor("nope")


def test_release_frees_a_finished_tensor_and_refuses_an_unfinished_one(tiny_package):
    decoder = StreamDecoder()
    manifest_end = HEADER_SIZE + int.from_bytes(tiny_package[8:16], "little")
    decoder.feed(tiny_package[:manifest_end])
    decoder.feed(tiny_package[manifest_end:manifest_end + decoder.manifest.rung_end(0)])
    with pytest.raises(DecoderStateError, match="chunks still to come"):
        decoder.release("layer.weight")  # at rung 0 of 2: its refinements still need the state
    decoder.release("layer.bias")  # sent exact in rung 0
    with pytest.raises(DecoderStateError, match="released"):
        decoder.tensor("layer.bias")
    with pytest.raises(KeyError):
        decoder.release("nope")
    decoder.feed(tiny_package[manifest_end + decoder.manifest.rung_end(0):])
    decoder.close()
    decoder.release("layer.weight")
    assert decoder.rungs() == {"layer.weight": 2, "layer.bias": 2, "steps": 2}
    assert set(decoder.tensors()) == {"steps"}
    assert decoder.tensor("steps").tobytes() == tiny_arrays()["steps"].tobytes()


def test_threads_decode_the_same_bits_as_one(tmp_path):
    """Chunks go to threads in runs (a few per thread); every tensor, every block, must come out the same."""
    rows = np.linspace(-3, 3, 40 * 96, dtype=np.float32).reshape(40, 96)
    arrays = {f"t{i}": (np.sin(rows * (i + 1)) * np.float32(0.1 * (i + 1))).astype(np.float32) for i in range(7)}
    arrays["odd"] = np.arange(5, dtype=np.float32)
    path = tmp_path / "m.blad"
    bitladder.encode(arrays, path, ladder=Ladder.parse("int4,int8,exact", min_size=64, block_size=1000))
    package = bitladder.open(path)
    assert len(package.manifest.chunks) > 30  # blocks of several tensors in every rung
    for rung in range(3):
        one = package.decode(rung, raw=True)
        for threads in (2, 3):
            many = package.decode(rung, threads=threads, raw=True)
            assert all(many[name].tobytes() == one[name].tobytes() for name in arrays)
    chunks = package.manifest.chunks
    indices = list(range(len(chunks)))
    for count in (1, 2, 8, 1000):
        runs = _runs(indices, chunks, count)
        assert [i for run in runs for i in run] == indices and all(runs) and len(runs) <= count + 1
