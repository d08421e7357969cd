"""Golden bytes pin the format: a committed package must keep decoding, and encoding must keep producing it."""

import json
import struct
from pathlib import Path

import blake3
import numpy as np
import zstandard

import bitladder

from .conftest import tiny_arrays

GOLDEN = Path(__file__).parent / "golden" / "tiny.blad"

# The 144 bytes that open tiny.blad, field by field (docs/FORMAT.md). Regenerating the golden file changes the
# length and the digest; the rest is the format itself.
GOLDEN_HEADER = bytes.fromhex(
    "424c4144"                # magic "BLAD"
    "0200"                    # format version 2, u16 LE
    "0000"                    # flags 0: unsigned
    "7202000000000000"        # manifest length 626, u64 LE
    "21ccb4361ca20c3c12829ae1fc184dc16eeaa3fbfd1d100bc4a9fefb066048d1"  # BLAKE3 of the manifest bytes
) + bytes(32 + 64)            # no public key, no signature: zeros in an unsigned package
HEADER = len(GOLDEN_HEADER)


def test_header_fields_sit_where_format_md_says():
    data = GOLDEN.read_bytes()
    assert HEADER == 144
    assert data[:HEADER] == GOLDEN_HEADER
    assert data[:4] == b"BLAD"
    assert struct.unpack_from("<HH", data, 4) == (2, 0)
    (manifest_length,) = struct.unpack_from("<Q", data, 8)
    manifest = data[HEADER:HEADER + manifest_length]
    assert data[16:48] == blake3.blake3(manifest).digest()
    text = zstandard.ZstdDecompressor().decompress(manifest, allow_extra_data=False)  # one frame, nothing after
    assert zstandard.frame_content_size(manifest) == len(text)
    parsed = json.loads(text)
    assert parsed["version"] == 2
    assert parsed["digest"] == "blake3"
    assert all(len(c) == 5 for c in parsed["chunks"])  # [tensor, block, rung, length, digest]
    assert HEADER + manifest_length + sum(c[3] for c in parsed["chunks"]) == len(data)
    # rung-major: every chunk of rung 0, then rung 1, ...
    assert [c[2] for c in parsed["chunks"]] == sorted(c[2] for c in parsed["chunks"])
    # every chunk digest is BLAKE3 of its bytes, and chunks lie back to back
    start = HEADER + manifest_length
    for _tensor, _block, _rung, length, digest in parsed["chunks"]:
        assert digest == blake3.blake3(data[start:start + length]).hexdigest()
        start += length


def test_encoding_reproduces_the_golden_bytes(tmp_path):
    out = tmp_path / "tiny.blad"
    bitladder.encode(tiny_arrays(), out, ladder="int4,int8,exact", min_size=64, model_id="tiny")
    assert out.read_bytes() == GOLDEN.read_bytes()


def test_golden_package_decodes_to_the_source():
    package = bitladder.open(GOLDEN.read_bytes())
    decoded = package.decode()
    for name, array in tiny_arrays().items():
        assert decoded[name].tobytes() == array.tobytes(), name
        assert decoded[name].shape == array.shape
    assert package.manifest.ladder.names == ["int4", "int8", "exact"]
    assert package.manifest.model_id == "tiny"
    # Lower rungs are lossy but close, and closer at each rung.
    errors = [np.abs(package.decode(r)["layer.weight"].view(np.float32) - tiny_arrays()["layer.weight"]).max()
              for r in range(3)]
    assert errors[0] > errors[1] > errors[2] == 0
