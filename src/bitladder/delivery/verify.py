"""Check a package's bytes as they stream in, without decoding: header, manifest digest, chunk digests.

The server verifies uploads with it (chunks are hashed incrementally, never buffered), and clients that only
need to prove they hold the exact bytes (load tests) use it in place of a `StreamDecoder`: it has the same
`feed` / `position` / `pending` / `rewind` / `close` / `manifest` surface.

>>> verifier = PackageVerifier()
>>> verifier.feed(package_bytes)          # doctest: +SKIP
>>> verifier.close()                      # doctest: +SKIP
"""

from __future__ import annotations

import xxhash

from ..errors import ChunkIntegrityError, DecoderStateError, FormatError, TruncatedError
from ..format.spec import DIGEST_PREFIX, HEADER_SIZE, Header, Manifest


class PackageVerifier:
    """Verifies every digest of a package fed in pieces; returns verified chunk indices from `feed`."""

    def __init__(self) -> None:
        self._head = bytearray()  # header and manifest bytes, until the manifest is parsed
        self._header: Header | None = None
        self.manifest: Manifest | None = None
        self._consumed = 0
        self._next_chunk = 0
        self._chunk_got = 0
        self._hasher = xxhash.xxh3_128()
        self._failed: BaseException | None = None

    @property
    def position(self) -> int:
        return self._consumed

    @property
    def pending(self) -> int:
        return self._chunk_got if self.manifest is not None else len(self._head)

    @property
    def finished(self) -> bool:
        return self.manifest is not None and self._next_chunk == len(self.manifest.chunks)

    @property
    def data_start(self) -> int | None:
        """File offset of the first chunk, once the header has arrived (as `StreamDecoder.data_start`)."""
        return None if self._header is None else HEADER_SIZE + self._header.manifest_length

    def rewind(self) -> int:
        self._head.clear()
        self._chunk_got = 0
        self._hasher.reset()
        self._failed = None
        return self._consumed

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        if self._failed is not None:
            raise DecoderStateError(f"verifier stopped after an error at byte {self._consumed}: {self._failed}")
        view = memoryview(data).cast("B")
        try:
            if self.manifest is None:
                view = self._feed_head(view)
            return self._feed_chunks(view) if self.manifest is not None else []
        except FormatError as exc:
            self._failed = exc
            raise

    def _feed_head(self, view: memoryview) -> memoryview:
        need = HEADER_SIZE if self._header is None else HEADER_SIZE + self._header.manifest_length - self._consumed
        take = min(need - len(self._head), len(view))
        self._head += view[:take]
        view = view[take:]
        if len(self._head) < need:
            return view
        if self._header is None:
            self._header = Header.unpack(bytes(self._head))
            self._consumed, self._head = HEADER_SIZE, bytearray()
            return self._feed_head(view)
        self.manifest = Manifest.decode(self._header, memoryview(self._head))
        self._consumed, self._head = HEADER_SIZE + self._header.manifest_length, bytearray()
        return view

    def _feed_chunks(self, view: memoryview) -> list[int]:
        assert self.manifest is not None
        verified: list[int] = []
        try:
            while len(view):
                if self.finished:
                    raise FormatError(f"{len(view)} bytes after the last chunk at offset {self._consumed}")
                entry = self.manifest.chunks[self._next_chunk]
                take = min(entry.length - self._chunk_got, len(view))
                self._hasher.update(view[:take])
                self._chunk_got += take
                view = view[take:]
                if self._chunk_got == entry.length:
                    self._check(self._next_chunk)
                    verified.append(self._next_chunk - 1)
        except FormatError as exc:
            exc.updates = verified  # as StreamDecoder does: the chunks that verified before the failure
            raise
        return verified

    def _check(self, index: int) -> None:
        assert self.manifest is not None
        entry = self.manifest.chunks[index]
        got = DIGEST_PREFIX + self._hasher.hexdigest()
        self._hasher.reset()
        if got != entry.digest:
            self._chunk_got = 0
            raise ChunkIntegrityError(f"chunk {index}: digest mismatch at data offset {entry.offset}")
        self._consumed += entry.length
        self._chunk_got = 0
        self._next_chunk += 1

    def close(self) -> None:
        if not self.finished:
            where = "the manifest" if self.manifest is None else f"chunk {self._next_chunk}"
            raise TruncatedError(f"stream ended at byte {self._consumed + self.pending} inside {where}")
