"""Check a package's bytes as they stream in, without decoding: header, manifest digest, chunk digests.

The server verifies uploads with it (chunks are hashed as they pass, never buffered), and clients that only
need to prove they hold the exact bytes (load tests) use it in place of a `StreamDecoder`: both run on the
same `Framer` and share its `feed` / `position` / `pending` / `rewind` / `close` / `manifest` surface.

>>> verifier = PackageVerifier()
>>> verifier.feed(package_bytes).raise_for_error()   # doctest: +SKIP
(0, 1, 2)
>>> verifier.close()                                 # doctest: +SKIP
"""

from __future__ import annotations

from ..format.framer import Chunk, Fed, Framed, Framer
from ..format.signing import Trust


def _index(chunk: Chunk) -> int:
    return chunk.index


class PackageVerifier(Framed):
    """Verifies every digest of a package fed in pieces; `feed` returns the indices of the chunks that verified.

    With `trust`, also its signature, as soon as the header arrives (`feed` raises the `TrustError`)."""

    def __init__(self, *, trust: Trust | None = None) -> None:
        self._framer = Framer(keep_payload=False, trust=trust)

    def feed(self, data: bytes | bytearray | memoryview) -> Fed[int]:
        """Accept more bytes; returns the chunks that verified and the error that stopped the call, if any."""
        return self._framer.feed(data, _index)
