"""Reading an Arrow IPC request body without trusting it: sizes are checked before anything is decompressed.

A compressed Arrow stream is tiny for what it holds (12.5 KB of zstd can carry 50 million rows), and
pyarrow's readers decompress a whole record batch before its rows can be counted. So `read_table` walks
the stream message by message: the schema first (duplicate or too many columns are refused before any
batch is read), then for each record batch the row count and the decompressed size, read from the
message's own metadata (`batch_sizes`), are added up and checked against the limits; only a batch within
them is decompressed. The file format is the stream format behind an 8-byte magic (its footer is not
needed). Everything refused is an `InvalidRequest` naming what is wrong: 400, or 413 over a limit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pyarrow as pa

from bentos.validation import InvalidRequest, Problem

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
FILE_MAGIC = b"ARROW1"
_RECORD_BATCH = 3  # MessageHeader union: NONE, Schema, DictionaryBatch, RecordBatch, ...


def _refuse(msg: str, kind: str = "arrow_format", status: int = 400, loc: Sequence[str | int] = ("body",)) -> InvalidRequest:
    return InvalidRequest([Problem(tuple(loc), msg, kind)], status=status)


class _Table:
    """One flatbuffers table inside ``buf`` at ``pos`` (the format Arrow's IPC metadata is written in)."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def field(self, index: int) -> int | None:
        """Absolute position of field ``index``, None when it is absent (the default)."""
        entry = 4 + 2 * index
        if entry >= self.vtable_len:
            return None
        offset: int = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str) -> int:
        at = self.field(index)
        return 0 if at is None else int(struct.unpack_from(fmt, self.buf, at)[0])

    def table(self, index: int) -> _Table | None:
        at = self.field(index)
        return None if at is None else _Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])

    def structs(self, index: int, fmt: str) -> list[tuple[int, ...]]:
        """A vector of structs of ``fmt`` (little-endian)."""
        at = self.field(index)
        if at is None:
            return []
        start = at + struct.unpack_from("<I", self.buf, at)[0]
        count = struct.unpack_from("<I", self.buf, start)[0]
        size = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, self.buf, start + 4 + i * size) for i in range(count)]


def batch_sizes(message: pa.ipc.Message) -> tuple[int, int]:
    """(rows, decompressed body bytes) of a record-batch message, from its metadata: nothing is decompressed.

    Message: field 1 header type, field 2 the header table. RecordBatch: field 0 length (rows), field 2
    buffers (offset, length) in the body, field 3 compression: when present each buffer starts with its
    decompressed length as an int64 (-1: stored uncompressed). `ValueError` if the metadata is malformed.
    """
    meta = message.metadata.to_pybytes()
    try:
        root = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
        batch = root.table(2)
        if root.scalar(1, "<B") != _RECORD_BATCH or batch is None:
            raise ValueError("not a record batch")
        rows = batch.scalar(0, "<q")
        buffers = batch.structs(2, "<qq")
        compressed = batch.field(3) is not None
        body = message.body
        size = 0
        for offset, length in buffers:
            if compressed and length >= 8:
                declared = struct.unpack_from("<q", body, offset)[0] if offset + 8 <= body.size else -1
                size += length - 8 if declared < 0 else declared
            else:
                size += length
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed record batch metadata: {exc}") from None
    if rows < 0 or size < 0:
        raise ValueError("malformed record batch metadata: negative size")
    return rows, size


def _check_schema(schema: pa.Schema, max_columns: int) -> None:
    names = schema.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequest([Problem(("columns", n), "duplicate column name (each feature is one column)",
                                      "duplicate_column") for n in duplicates])
    if len(names) > max_columns:
        raise _refuse(f"{len(names)} columns; at most {max_columns} are possible (the model's features and "
                      "request_id)", "too_many_columns", loc=("columns",))
    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    if dictionary:
        raise InvalidRequest([Problem(("columns", n), "dictionary-encoded columns are not supported",
                                      "column_type") for n in dictionary])


def read_table(body: bytes, media: str, *, max_rows: int, max_bytes: int, max_columns: int) -> pa.Table:
    """The table in an Arrow IPC ``body`` (``media``: `ARROW_STREAM` or `ARROW_FILE`), within the limits:
    at most ``max_rows`` rows (413), ``max_bytes`` decompressed (413) and ``max_columns`` columns (400)."""
    data = body
    if media == ARROW_FILE:
        if not body.startswith(FILE_MAGIC):
            raise _refuse("not an Arrow file: it does not start with ARROW1")
        data = body[8:]
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
    try:
        first = reader.read_next_message()
        if first.type != "schema":
            raise _refuse(f"the stream starts with a {first.type} message, not a schema")
        schema = pa.ipc.read_schema(first)
        _check_schema(schema, max_columns)
        batches: list[pa.RecordBatch] = []
        rows = size = 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            if message.type != "record batch":
                raise _refuse(f"unexpected {message.type} message: only record batches may follow the schema")
            n, nbytes = batch_sizes(message)
            rows, size = rows + n, size + nbytes
            if rows > max_rows:
                raise _refuse(f"more than {max_rows} rows (the batch limit)", "too_long", 413, ("rows",))
            if size > max_bytes:
                raise _refuse(f"decompresses to more than {max_bytes} bytes (the body limit)", "too_large", 413)
            batches.append(pa.ipc.read_record_batch(message, schema))
    except StopIteration:
        raise _refuse("empty body: no Arrow schema") from None
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as exc:
        raise _refuse(f"body is not a valid Arrow {'file' if media == ARROW_FILE else 'stream'}: "
                      f"{str(exc).splitlines()[0][:200]}") from None
    return pa.Table.from_batches(batches, schema)
