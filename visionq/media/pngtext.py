"""A PNG as its decoder should see it: the same bytes, less its text chunks.

Pillow reads every tEXt, zTXt and iTXt chunk into memory, inflates the compressed ones up to
`PngImagePlugin.MAX_TEXT_CHUNK` (1 MB) and refuses the whole image past that, or past
`MAX_TEXT_MEMORY` (64 MB) of text in all: a 64x64 image whose comment inflates to 60 MB was
refused although its pixels were fine, while a 20 MB uncompressed comment was read in whole
and accepted. Those limits are module globals shared by all the API's threads, so they
cannot be raised for one call, and raising them for all would inflate a bomb into memory.

We never use the text, so the decoder reads the file through `PngWithoutText`, which seeks
over those chunks without reading them: whatever they hold or claim, they cost neither
memory nor a verdict, the same for the three kinds. Everything else reaches the decoder
byte for byte, a broken chunk included, so it still judges the pixels and the structure.
"""

from __future__ import annotations

import bisect
import io
import sys
from typing import BinaryIO

TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_SIGNATURE = 8
_CHUNK_OVERHEAD = 12  # length, type and CRC around the data
_MAX_CHUNK = 2**31 - 1  # the PNG limit; a longer length is a broken file, left to the decoder
_TO_EOF = sys.maxsize
#: Kept runs the index holds at most: a real image has a handful (text sits before or
#: after the image data), so this only bounds a file of text between thousands of chunks.
MAX_RUNS = 1024


class PngWithoutText(io.RawIOBase):
    """A read-only, seekable view of `raw` without its text chunks.

    The view is indexed lazily, one chunk header at a time and only as far as it is read,
    so reading the header (the intake's probe) walks only the chunks before the first
    IDAT. The index holds one run per stretch of kept chunks: a handful, however many
    chunks the image has, and never more than `MAX_RUNS`.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        # Kept runs: where each starts in the view, where in `raw`, and how long it is.
        self._virtual = [0]
        self._real = [0]
        self._length = [_SIGNATURE]
        self._scan = _SIGNATURE  # the next chunk header of `raw` not yet looked at
        self._indexed = False
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            run = self._run_at(self._pos)
            if run is None:
                break
            start, real, length = run
            offset = self._pos - start
            self._raw.seek(real + offset)
            data = self._raw.read(min(len(view) - filled, length - offset))
            if not data:
                break
            view[filled : filled + len(data)] = data
            filled += len(data)
            self._pos += len(data)
        return filled

    def _run_at(self, pos: int) -> tuple[int, int, int] | None:
        while not self._indexed and pos >= self._virtual[-1] + self._length[-1]:
            self._index_next()
        i = bisect.bisect_right(self._virtual, pos) - 1
        if pos >= self._virtual[i] + self._length[i]:
            return None
        return self._virtual[i], self._real[i], self._length[i]

    def _index_next(self) -> None:
        self._raw.seek(self._scan)
        header = self._raw.read(8)
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        if len(header) < 8 or length > _MAX_CHUNK or kind == b"IEND":
            # The end, or a file the decoder must judge as it is: the rest goes unchanged.
            self._keep(self._scan, _TO_EOF)
            self._indexed = True
            return
        if kind in TEXT_CHUNKS and len(self._virtual) >= MAX_RUNS:
            # Text between most of the other chunks: a file built to grow this index. The
            # decoder reads the rest as it is, with its own bounds on text (and then its
            # refusal, in our words).
            self._keep(self._scan, _TO_EOF)
            self._indexed = True
            return
        if kind not in TEXT_CHUNKS:
            self._keep(self._scan, _CHUNK_OVERHEAD + length)
        self._scan += _CHUNK_OVERHEAD + length

    def _keep(self, real: int, length: int) -> None:
        if real == self._real[-1] + self._length[-1]:
            self._length[-1] = min(self._length[-1] + length, _TO_EOF)
            return
        self._virtual.append(self._virtual[-1] + self._length[-1])
        self._real.append(real)
        self._length.append(length)

    def _size(self) -> int:
        while not self._indexed:
            self._index_next()
        end = self._raw.seek(0, io.SEEK_END)
        return self._virtual[-1] + max(0, end - self._real[-1])
