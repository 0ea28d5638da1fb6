"""A streaming reader for uncompressed tar shards: (member name, bytes) of each regular file, in order.

Why not `tarfile`: its stream mode parses each header into a full TarInfo (every field, pax and GNU
variants, a generic checksum path), ~17 us per member on this 2-core machine - about as much as
decoding a 64 px JPEG, and webdataset shards hold two or more members per sample. Here a header costs
a few slices, an octal parse and a checksum. Handled: ustar (with its name prefix), GNU long names
(type L), pax extended headers (path and size), v7 headers; other member types (directories, links)
are skipped. A compressed stream (gzip, bzip2, xz) is handed to `tarfile`, which decompresses it.

It reads twice per member (header, then data): give it a buffered stream - Python's `open(path, "rb")`,
or pyarrow's `open_input_stream(path, buffer_size=TAR_READ_BUFFER)`, as the platform's readers do (Ray
Data opens its files with a 32 MiB buffer). An unbuffered remote stream would make every read a request.

Errors are `tarfile.ReadError`, which the reader's bad-sample policy already handles: a header whose
checksum is wrong, a stream that ends inside a header or a member (then the error's `member` names it). `tarfile` stops quietly at a bad
header after the first; this reader says so, since the rest of the shard is lost either way.
"""
from __future__ import annotations

import tarfile
from typing import BinaryIO, Iterator

BLOCK = 512
TAR_READ_BUFFER = 1 << 20  # bytes: the buffer to open a remote shard with (pyarrow's default is none)
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_REGULAR = (b"0", b"\x00", b"7")  # regular file, old-style regular file, contiguous file
_POSIX_MAGIC = b"ustar\x0000"


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular member of a tar stream, in stream order."""
    first = _read_exact(stream, BLOCK, allow_empty=True)
    if not first:
        raise tarfile.ReadError("empty file")
    if first.startswith(_COMPRESSED_MAGIC):
        yield from _via_tarfile(_Prefixed(first, stream))
        return
    header, offset = first, 0
    long_name: str | None = None
    pax: dict[str, str] = {}
    while True:
        if header.count(0) == len(header):
            return  # end-of-archive marker (or its first bytes, where a copy cut it short)
        if len(header) < BLOCK:
            raise tarfile.ReadError(f"unexpected end of data: a {len(header)}-byte header at offset {offset}")
        _check_sum(header, offset)
        kind = header[156:157]
        size = int(pax["size"]) if "size" in pax else _number(header[124:136], offset)
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        data = _read_exact(stream, padded)
        if len(data) < padded:  # a cut even in the padding: the members after it (maybe of this sample) are lost
            error = tarfile.ReadError(f"unexpected end of data: member at offset {offset} needs {size} bytes and {padded - size} of padding, the stream has {len(data)}")
            error.member = pax.get("path") or long_name or _header_name(header)  # which sample broke
            raise error
        if kind == b"L":  # GNU: the next member's name
            long_name = data[:size].rstrip(b"\x00").decode("utf-8", "surrogateescape")
        elif kind == b"x":  # pax: overrides for the next member
            pax = _pax_records(data[:size], offset)
        elif kind == b"g" or kind == b"K":  # pax global header, GNU long link name: nothing a reader needs
            pass
        else:
            name = pax.get("path") or long_name or _header_name(header)
            if kind in _REGULAR and not name.endswith("/"):
                yield name, data[:size] if padded != size else data
            long_name, pax = None, {}
        offset += BLOCK + padded
        header = _read_exact(stream, BLOCK, allow_empty=True)
        if not header:
            return  # ended on a member boundary without the end-of-archive blocks: what tarfile accepts too


def _read_exact(stream: BinaryIO, n: int, allow_empty: bool = False) -> bytes:
    """Up to n bytes: a raw or non-blocking stream may return fewer per call, so read until n or EOF."""
    data = stream.read(n)
    if data is None:
        data = b""
    if len(data) == n or (allow_empty and not data):
        return bytes(data)
    parts, got = [data], len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(bytes(p) for p in parts)


def _check_sum(header: bytes, offset: int) -> None:
    stored = _number(header[148:156], offset)
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32  # the checksum field counts as 8 spaces
    if stored != unsigned:
        high = sum(1 for b in header if b > 127) - sum(1 for b in header[148:156] if b > 127)
        if stored != unsigned - 256 * high:  # some old tars summed signed chars
            raise tarfile.ReadError(f"corrupt tar header at offset {offset} (bad checksum)")


def _number(field: bytes, offset: int) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 (sizes of 8 GiB and more)
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - (1 << (8 * (len(field) - 1)))
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise tarfile.ReadError(f"corrupt tar header at offset {offset} (not an octal number: {field!r})") from None


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\x00", 1)[0]
    if header[257:265] == _POSIX_MAGIC:
        prefix = header[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, offset: int) -> dict[str, str]:
    """'<length> <key>=<value>\\n' records."""
    out, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\x00":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise tarfile.ReadError(f"corrupt pax header at offset {offset}") from None
        if space < 0 or length <= space - pos:  # a length of 0 (or less) would never advance `pos`: a hang
            raise tarfile.ReadError(f"corrupt pax header at offset {offset} (record length {length} at byte {pos})")
        record = data[space + 1 : pos + length - 1]  # without the trailing newline
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class _Prefixed:
    """A stream that first returns bytes already read from it."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self.prefix, self.stream = prefix, stream

    def read(self, n: int = -1) -> bytes:
        if not self.prefix:
            return self.stream.read(n)
        if n is None or n < 0:
            out, self.prefix = self.prefix + self.stream.read(), b""
            return out
        out, self.prefix = self.prefix[:n], self.prefix[n:]
        return out if len(out) == n else out + self.stream.read(n - len(out))


def _via_tarfile(stream) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            if info.isreg():
                yield info.name, tar.extractfile(info).read()
