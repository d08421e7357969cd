import numpy as np
import pytest

from bitladder.codecs.entropy import FrameReader, compress
from bitladder.errors import ChunkIntegrityError

DATA = np.arange(200_000, dtype=np.uint32).tobytes()


def test_frame_reader_returns_exact_pieces_of_the_output():
    reader = FrameReader(compress(DATA), len(DATA))
    sizes = [0, 1, 65_536, 300_000, len(DATA) - 365_537]
    assert b"".join(reader.read(size) for size in sizes) == DATA
    reader.finish()


def test_frame_reader_refuses_a_wrong_size_or_a_short_read():
    with pytest.raises(ChunkIntegrityError, match="declares"):
        FrameReader(compress(DATA), len(DATA) - 1)
    reader = FrameReader(compress(DATA), len(DATA))
    reader.read(1000)
    with pytest.raises(ChunkIntegrityError, match="more or fewer"):
        reader.finish()
    with pytest.raises(ChunkIntegrityError, match="past"):
        reader.read(len(DATA))
    with pytest.raises(ChunkIntegrityError, match="not a zstd frame"):
        FrameReader(b"garbage", 7)
