"""The streaming tar reader (data/tar_stream.py) against archives written by Python's tarfile and by
webdataset's TarWriter, in every header format, compressed, and cut or corrupted."""
import io
import tarfile

import pytest

from contrastlab.platform.data.tar_stream import iter_tar_members

LONG = "deep/" * 30 + "x" * 40 + ".jpg"  # 190 characters: past ustar's 100-byte name


def _tar(members, fmt=tarfile.PAX_FORMAT, mode="w", extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tar:
        if extra:
            extra(tar)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = [("00000.jpg", b"\xff\xd8" + bytes(range(256)) * 3), ("00000.json", b'{"index": 0}'), ("00001.txt", b""),
           ("dir/00002.txt", "ünïcode".encode()), ("pre/" * 20 + "n.txt", b"prefix-split name"), (LONG, b"long name")]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_what_tarfile_writes(fmt):
    members = [m for m in MEMBERS if fmt != tarfile.USTAR_FORMAT or m[0] != LONG]  # ustar cannot hold LONG
    assert list(iter_tar_members(io.BytesIO(_tar(members, fmt)))) == members


def test_pax_headers_for_non_ascii_names_and_directories_and_links_are_skipped():
    def extra(tar):
        d = tarfile.TarInfo("somedir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        link = tarfile.TarInfo("alink")
        link.type, link.linkname = tarfile.SYMTYPE, "x" * 200  # a GNU/pax long link name too
        tar.addfile(link)

    members = [("café/00000.txt", b"pax path"), ("00001.txt", b"x" * 1025)]
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        assert list(iter_tar_members(io.BytesIO(_tar(members, fmt, extra=extra)))) == members


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_streams_go_through_tarfile(mode):
    assert list(iter_tar_members(io.BytesIO(_tar(MEMBERS, mode=mode)))) == MEMBERS


def test_webdataset_tarwriter_shards():
    import webdataset as wds

    buf = io.BytesIO()
    with wds.TarWriter(buf) as sink:
        for i in range(3):
            sink.write({"__key__": f"{i:05d}", "jpg": b"\xff\xd8jpeg", "txt": f"caption {i}", "json": {"index": i}})
    names = [n for n, _ in iter_tar_members(io.BytesIO(buf.getvalue()))]
    assert names == [f"{i:05d}.{e}" for i in range(3) for e in ("jpg", "json", "txt")]


def test_a_stream_that_returns_short_reads():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def read(self, n=-1):
            n = min(n if n >= 0 else len(self.data), 100)  # at most 100 bytes per call
            out = self.data[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    assert list(iter_tar_members(Trickle(_tar(MEMBERS)))) == MEMBERS


def test_cut_and_corrupt_archives_raise_read_errors():
    data = _tar(MEMBERS)
    first_data_end = 512 + 512 * 2  # header + 770 bytes of 00000.jpg padded to 1024
    with pytest.raises(tarfile.ReadError, match="unexpected end of data.*needs 770 bytes"):
        list(iter_tar_members(io.BytesIO(data[:512 + 100])))
    with pytest.raises(tarfile.ReadError, match="a 100-byte header"):
        list(iter_tar_members(io.BytesIO(data[:first_data_end + 100])))
    assert len(list(iter_tar_members(io.BytesIO(data[:first_data_end])))) == 1  # ends on a member boundary: fine
    end = len(data) - data[::-1].find(b"long name"[::-1]) + (-9) % 512  # just past the last member's padding
    assert len(list(iter_tar_members(io.BytesIO(data[:end + 100])))) == len(MEMBERS)  # end-of-archive zeros cut short: fine
    with pytest.raises(tarfile.ReadError, match="unexpected end of data"):  # padding cut: what followed is lost (as tarfile)
        list(iter_tar_members(io.BytesIO(data[:end - 400])))
    corrupt = bytearray(data)
    corrupt[first_data_end + 10] ^= 0x55  # a byte of the second header's name
    got = []
    with pytest.raises(tarfile.ReadError, match="bad checksum"):
        for member in iter_tar_members(io.BytesIO(bytes(corrupt))):
            got.append(member)
    assert got == MEMBERS[:1]
    with pytest.raises(tarfile.ReadError, match="empty file"):
        list(iter_tar_members(io.BytesIO(b"")))
    with pytest.raises(tarfile.ReadError, match="corrupt tar header at offset 0"):
        list(iter_tar_members(io.BytesIO(b"not a tar" * 100)))


def test_reads_through_pyarrow_streams_as_remote_shards_are_opened(tmp_path):
    """Remote shards arrive as pyarrow streams (s3://, gs://): buffered as the platform opens them, and
    unbuffered, they give the same samples as a local file."""
    import numpy as np
    from pyarrow import fs

    from contrastlab.platform.data.codecs import encode_jpeg
    from contrastlab.platform.data.reader import iter_tar_samples
    from contrastlab.platform.data.shards import write_shards
    from contrastlab.platform.data.tar_stream import TAR_READ_BUFFER
    from contrastlab.platform.local import iter_batches

    img = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    paths = write_shards(((f"{i:05d}", {"jpg": img, "txt": "x" * i, "json": {"index": i}}) for i in range(30)), tmp_path, maxcount=10)
    local = [s for p in paths for s in iter_tar_samples(open(p, "rb"), p, "raise")]
    arrow = fs.LocalFileSystem()
    for buffer_size in (TAR_READ_BUFFER, None):
        got = [s for p in paths for s in iter_tar_samples(arrow.open_input_stream(p, buffer_size=buffer_size), p, "raise")]
        assert got == local and len(got) == 30
    fn = lambda s, rng: {"n": np.int64(len(s["txt"]))}  # noqa: E731
    batches = list(iter_batches(paths, fn, ("txt",), 30, split="eval", seed=0, filesystem=arrow))
    assert sorted(batches[0]["n"].tolist()) == list(range(30))


def test_samples_are_counted_as_the_reader_groups_them_when_there_is_no_manifest(tmp_path, capsys):
    """Shards from elsewhere (no contrastlab manifest) are counted in one pass with the same reader:
    keys in sub-folders stay distinct, and a cut shard counts the samples that can be read."""
    import glob
    import os

    from contrastlab.platform.runner import _source_count

    buf = _tar([(f"{d}/{i:03d}.{ext}", b"x") for d in ("a", "b") for i in range(5) for ext in ("jpg", "txt")])
    whole, cut = tmp_path / "whole.tar", tmp_path / "cut.tar"
    whole.write_bytes(buf)
    cut.write_bytes(buf[: 512 * 7])  # cut after the 4th member's header: sample a/000 and 1 member of a/001
    assert not glob.glob(os.path.join(tmp_path, "*.manifest.json"))
    assert _source_count([str(whole)], None) == 10  # a/000 and b/000 are different samples
    assert _source_count([str(whole), str(cut)], None) == 11
    assert "counting samples in 2 shard(s)" in capsys.readouterr().out
