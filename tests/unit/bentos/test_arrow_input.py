"""Arrow request bodies are measured before they are decompressed (`bentos.arrow_input`): a few KB of zstd
that hold millions of rows are refused from the metadata, and malformed streams are a 400."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from bentos.arrow_input import ARROW_FILE, ARROW_STREAM, batch_sizes, read_table
from bentos.validation import InvalidRequest

LIMITS = {"max_rows": 10_000, "max_bytes": 64 * 1024 * 1024, "max_columns": 8}


def stream(table: pa.Table, compression: str | None = "zstd", chunk: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table, max_chunksize=chunk)
    return bytes(sink.getvalue().to_pybytes())


def file(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_sizes_come_from_the_metadata(compression: str | None) -> None:
    table = pa.table({"a": np.arange(1_000, dtype=np.float64), "b": np.zeros(1_000, dtype=np.float32),
                      "request_id": [f"id-{i}" for i in range(1_000)]})
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(stream(table, compression, chunk=400)))
    reader.read_next_message()  # the schema
    sizes = [batch_sizes(reader.read_next_message()) for _ in range(3)]
    assert [rows for rows, _ in sizes] == [400, 400, 200]
    for (rows, nbytes), batch in zip(sizes, table.to_batches(max_chunksize=400), strict=True):
        # the decompressed body: 8+4 bytes of values per row, the string offsets and characters, validity bitmaps
        assert nbytes >= rows * 12 + len("".join(batch.column(2).to_pylist()))
        assert nbytes <= batch.nbytes + 256  # buffers are padded to 8 bytes


def test_a_decompression_bomb_is_refused_before_it_is_decompressed() -> None:
    """50 million zeros compress to a few KB; the old reader decompressed all 400 MB before counting rows."""
    bomb = pa.table({"f01": pa.array(np.zeros(50_000_000, dtype=np.float64))})
    body = stream(bomb)
    assert len(body) < 100_000
    pool = pa.default_memory_pool()
    before = pool.max_memory()
    with pytest.raises(InvalidRequest) as err:
        read_table(body, ARROW_STREAM, **LIMITS)
    assert err.value.status == 413 and err.value.problems[0].type == "too_long"
    assert "more than 10000 rows" in str(err.value)
    assert pool.max_memory() - before < 50_000_000  # nothing near the 400 MB was allocated


def test_decompressed_size_is_capped_too() -> None:
    long_ids = pa.table({"request_id": ["x" * 1_000_000] * 100})  # 100 MB of text in a few hundred KB
    with pytest.raises(InvalidRequest) as err:
        read_table(stream(long_ids), ARROW_STREAM, **LIMITS)
    assert err.value.status == 413 and "decompresses to more than" in str(err.value)


def test_stream_and_file_read_back() -> None:
    table = pa.table({"amount": [1.0, 2.0], "f01": [3.0, 4.0]})
    assert read_table(stream(table, chunk=1), ARROW_STREAM, **LIMITS).equals(table)
    assert read_table(file(table), ARROW_FILE, **LIMITS).equals(table)


@pytest.mark.parametrize(("body", "media", "message"), [
    (b"", ARROW_STREAM, "empty body"),
    (b"not arrow at all", ARROW_STREAM, "not a valid Arrow stream"),
    (b"PARQUET1", ARROW_FILE, "does not start with ARROW1"),
])
def test_malformed_bodies_are_a_400(body: bytes, media: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        read_table(body, media, **LIMITS)
    assert err.value.status == 400 and message in str(err.value)


def test_a_truncated_stream_is_a_400() -> None:
    body = stream(pa.table({"f01": np.arange(1_000, dtype=np.float64)}), None)
    with pytest.raises(InvalidRequest) as err:
        read_table(body[: len(body) // 2], ARROW_STREAM, **LIMITS)
    assert err.value.status == 400


def test_schema_problems_come_before_any_batch() -> None:
    dup = pa.Table.from_arrays([pa.array([1.0])] * 3, names=["f01", "f01", "amount"])
    with pytest.raises(InvalidRequest) as err:
        read_table(stream(dup), ARROW_STREAM, **LIMITS)
    assert [(p.loc, p.type) for p in err.value.problems] == [(("columns", "f01"), "duplicate_column")]
    wide = pa.table({f"c{i}": [1.0] for i in range(9)})
    with pytest.raises(InvalidRequest, match="9 columns; at most 8"):
        read_table(stream(wide), ARROW_STREAM, **LIMITS)
    coded = pa.table({"f01": pa.array(["a", "b"]).dictionary_encode()})
    with pytest.raises(InvalidRequest, match="dictionary-encoded"):
        read_table(stream(coded), ARROW_STREAM, **LIMITS)
