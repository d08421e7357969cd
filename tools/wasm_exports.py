"""Check that a WebAssembly module exports the functions named on the command line.

    python3 tools/wasm_exports.py build/wasm/bitladder_core.wasm bl_int_decode bl_refine_decode ...

Reads the export section itself (standard library only, so `make wasm` needs no wasm tooling beyond clang and
lld), prints the exported functions, and exits 1 naming any that are missing or not functions.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAGIC = b"\0asm\1\0\0\0"
EXPORT_SECTION = 7
FUNCTION_KIND = 0


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("LEB128 number runs past the end of the module")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def exports(data: bytes) -> dict[str, int]:
    """Map of export name to kind (0 function, 1 table, 2 memory, 3 global) of a wasm binary."""
    if data[:8] != MAGIC:
        raise ValueError("not a WebAssembly 1.0 module (bad magic or version)")
    pos, found = 8, {}
    while pos < len(data):
        section, pos = data[pos], pos + 1
        size, pos = _uleb(data, pos)
        end = pos + size
        if section == EXPORT_SECTION:
            count, pos = _uleb(data, pos)
            for _ in range(count):
                length, pos = _uleb(data, pos)
                name = data[pos : pos + length].decode()
                kind = data[pos + length]
                _, pos = _uleb(data, pos + length + 1)
                found[name] = kind
        pos = end
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write(__doc__ or "")
        return 2
    path, wanted = Path(argv[1]), argv[2:]
    if not path.is_file():
        sys.stderr.write(f"{path}: no such file\n")
        return 1
    found = exports(path.read_bytes())
    functions = sorted(name for name, kind in found.items() if kind == FUNCTION_KIND)
    missing = [name for name in wanted if found.get(name) != FUNCTION_KIND]
    sys.stdout.write(f"{path}: {path.stat().st_size} bytes, exports {len(functions)} functions: {' '.join(functions)}\n")
    if missing:
        sys.stderr.write(f"{path}: missing function exports: {' '.join(missing)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
