"""Review 21 fixes in data/reader.py, data/tar_stream.py and data/paths.py that need no Ray cluster."""
import io
import tarfile
import threading

import numpy as np
import pytest

from contrastlab.platform.data.paths import _resolve_remote, _split_query, expand_braces, resolve_shards
from contrastlab.platform.data.reader import (BadSampleError, PreprocessBatches, epoch_rows, file_order_seed, iter_tar_samples,
                                              rows_to_batch, sample_index)
from contrastlab.platform.data.selection import DataSelection
from contrastlab.platform.data.shards import write_shards
from contrastlab.platform.data.tar_stream import _pax_records

NETWORK_ERROR = "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 28, Timeout was reached"


class _FailingStream:
    """A stream that raises a network OSError once `fail_at` bytes have been read."""

    def __init__(self, data: bytes, fail_at: int):
        self.stream, self.fail_at = io.BytesIO(data), fail_at

    def read(self, n=-1):
        if self.stream.tell() >= self.fail_at:
            raise OSError(NETWORK_ERROR)
        return self.stream.read(n)


def _shard_bytes(tmp_path, n=6) -> tuple[str, bytes]:
    (path,) = write_shards(((f"{i:05d}", {"txt": "x" * 3000}) for i in range(n)), tmp_path)
    return path, open(path, "rb").read()


# 1 ------------------------------------------------------------------ a network error is no corrupt shard
def test_network_oserror_propagates_under_skip_policy(tmp_path):
    path, data = _shard_bytes(tmp_path)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        list(iter_tar_samples(_FailingStream(data, len(data) // 2), path, "skip"))


def test_network_oserror_is_retried_by_ray_data_and_no_sample_is_lost(tmp_path):
    from ray.data import DataContext
    from ray.data._internal.util import iterate_with_retry

    path, data = _shard_bytes(tmp_path)
    attempts = []

    def factory():  # what Ray's read_files does: reopen the file on every attempt
        attempts.append(1)
        return iter_tar_samples(_FailingStream(data, len(data) // 2) if len(attempts) == 1 else io.BytesIO(data), path, "skip")

    got = list(iterate_with_retry(factory, "read", match=DataContext.get_current().retried_io_errors, max_backoff_s=1))
    assert len(attempts) == 2 and [s["__key__"] for s in got] == [f"{i:05d}" for i in range(6)]


def test_truncated_shard_is_still_a_bad_sample(tmp_path):
    path, data = _shard_bytes(tmp_path)
    got = list(iter_tar_samples(io.BytesIO(data[: len(data) // 2]), path, "skip"))
    assert 0 < len(got) < 6
    with pytest.raises(BadSampleError, match="truncated"):
        list(iter_tar_samples(io.BytesIO(data[: len(data) // 2]), path, "raise"))


# 2 ------------------------------------------------------------------ brace lists with commas
def test_brace_list_in_a_pattern_is_not_split_as_a_shard_list(tmp_path):
    for name in ("a-000.tar", "b-000.tar", "c-000.tar", "x-001.tar", "x-002.tar"):
        (tmp_path / name).write_bytes(b"")
    d = str(tmp_path)
    paths, fs = resolve_shards(f"{d}/{{a,b}}-000.tar")
    assert fs is None and paths == [f"{d}/a-000.tar", f"{d}/b-000.tar"]
    paths, _ = resolve_shards(f"{d}/{{a,{{b,c}}}}-000.tar, {d}/x-{{001..002}}.tar,{d}/a-000.tar")
    assert paths == [f"{d}/{n}" for n in ("a-000.tar", "b-000.tar", "c-000.tar", "x-001.tar", "x-002.tar")]  # a-000 once


def test_nested_braces_expand_outermost_first():
    assert expand_braces("x{a,{b,c}}") == ["xa", "xb", "xc"]
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}{a,b}") == ["aa", "ab", "ba", "bb"]
    assert expand_braces("{a,a}-{1,1}") == ["a-1"]


# 3 ------------------------------------------------------------------ URI queries and pyarrow's paths
def test_split_query_keeps_glob_question_marks():
    assert _split_query("s3://b/a.tar?endpoint_override=localhost:9000&scheme=http") == (
        "s3://b/a.tar", "?endpoint_override=localhost:9000&scheme=http")
    assert _split_query("s3://b/shard-?.tar") == ("s3://b/shard-?.tar", "")


def test_remote_uri_uses_pyarrow_path_and_ignores_the_query(tmp_path):
    for name in ("s-0.tar", "s-1.tar", "other.txt"):
        (tmp_path / name).write_bytes(b"")
    d = str(tmp_path)
    fs, paths = _resolve_remote(f"file://{d}/s-0.tar")
    assert paths == [f"{d}/s-0.tar"] and type(fs).__name__ == "LocalFileSystem"
    assert _resolve_remote(f"file://{d}/s-0.tar?endpoint_override=localhost:9000")[1] == [f"{d}/s-0.tar"]
    assert _resolve_remote(f"file://{d}/s-*.tar?endpoint_override=localhost:9000")[1] == [f"{d}/s-0.tar", f"{d}/s-1.tar"]
    assert _resolve_remote(f"file://{d}/s-?.tar")[1] == [f"{d}/s-0.tar", f"{d}/s-1.tar"]  # '?' as a glob still works
    fs, paths = _resolve_remote(f"file://{d}/s-%30.tar")  # the path as pyarrow decodes it, not the URI's text
    assert paths == [f"{d}/s-0.tar"]


# 4 ------------------------------------------------------------------ the file order's seed
def test_file_order_seed_depends_on_seed_and_epoch_only():
    assert file_order_seed(7, 3) == file_order_seed(7, 3)
    assert len({file_order_seed(7, e) for e in range(20)}) == 20
    assert file_order_seed(7, 0) != file_order_seed(8, 0)
    assert 0 <= file_order_seed(-1, 0) < 2**32


# 5 ------------------------------------------------------------------ corrupt json under a selection
def test_corrupt_json_under_a_selection_reports_the_json_error():
    selection = DataSelection("domain", ("d1",))
    good = {"__key__": "00001", "__url__": "s.tar", "txt": b"a", "json": b'{"index": 1, "domain": "d1"}'}
    bad = {"__key__": "00002", "__url__": "s.tar", "txt": b"b", "json": b"{not json"}
    rows = [r for s in (good, bad) for r in epoch_rows(s, "s.tar", 0, 0, selection=selection)]
    assert [r["__repeat__"] for r in rows] == [0, 0]
    fn = lambda s, rng: {"n": np.int64(len(s["txt"]))}  # noqa: E731
    with pytest.raises(BadSampleError, match="key 00002: DecodeError: invalid JSON"):
        PreprocessBatches(fn, ("txt",), "raise", None, 0, "train", epoch=0)(rows_to_batch(rows))
    out = PreprocessBatches(fn, ("txt",), "skip", None, 0, "train", epoch=0)(rows_to_batch(rows))
    assert out["index"].tolist() == [1]


# 6 ------------------------------------------------------------------ a zero-length pax record
def test_zero_length_pax_record_raises_instead_of_hanging():
    box = {}

    def run():
        try:
            box["value"] = _pax_records(b"0 path=x\n", 1536)
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "_pax_records hung on a zero-length record"
    assert isinstance(box.get("error"), tarfile.ReadError) and "offset 1536" in str(box["error"])
    with pytest.raises(tarfile.ReadError, match="offset 0"):
        _pax_records(b"-5 path=x\n", 0)
    assert _pax_records(b"11 path=ab\n", 0) == {"path": "ab"}


# 8 ------------------------------------------------------------------ keys in sub-folders
def test_numeric_keys_in_sub_folders_get_distinct_indices():
    assert sample_index("0001", None, "s.tar") == 1  # flat numeric key (img2dataset): the number
    a, b = sample_index("cam1/0001", None, "s.tar"), sample_index("cam2/0001", None, "s.tar")
    assert a != b and 1 not in (a, b) and 0 <= a < 2**63 and 0 <= b < 2**63
    assert a == sample_index("cam1/0001", None, "other/dir/s.tar")  # shard basename + key: stable across runs
    assert sample_index("cam1/0001", {"index": 5}, "s.tar") == 5  # the json's index still wins
