"""Golden bytes pin the format: a committed package must keep decoding, and encoding must keep producing it."""

import json
import struct
from pathlib import Path

import numpy as np
import xxhash

import bitladder

from .conftest import tiny_arrays

GOLDEN = Path(__file__).parent / "golden" / "tiny.blad"


def test_header_fields_sit_where_format_md_says():
    data = GOLDEN.read_bytes()
    assert data[:4] == b"BLAD"
    assert struct.unpack_from("<HH", data, 4) == (1, 0)
    (manifest_length,) = struct.unpack_from("<Q", data, 8)
    assert manifest_length % 8 == 0
    manifest = data[32:32 + manifest_length]
    assert data[16:32] == xxhash.xxh3_128_digest(manifest)
    parsed = json.loads(manifest)
    assert [c["offset"] for c in parsed["chunks"]] == sorted(c["offset"] for c in parsed["chunks"])
    assert 32 + manifest_length + sum(c["length"] for c in parsed["chunks"]) == len(data)
    # rung-major: every chunk of rung 0, then rung 1, ...
    assert [c["rung"] for c in parsed["chunks"]] == sorted(c["rung"] for c in parsed["chunks"])


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
