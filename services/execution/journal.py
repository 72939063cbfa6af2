"""The write-ahead journal: each record is appended and fsynced before the action it describes.

Length-prefixed msgpack records in one append-only file. A torn last record (a crash mid-write)
is detected by its length and ignored: its action was never taken, since the write had not
returned."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import msgspec

from services.execution.core import JournalRecord

_LEN = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(JournalRecord)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.appended = 0

    def append(self, record: JournalRecord) -> None:
        body = _encoder.encode(record)
        os.write(self._fd, _LEN.pack(len(body)) + body)
        os.fsync(self._fd)  # durable before the caller acts on it
        self.appended += 1

    def read(self) -> list[JournalRecord]:
        data = self.path.read_bytes() if self.path.exists() else b""
        out, offset = [], 0
        while offset + _LEN.size <= len(data):
            (size,) = _LEN.unpack_from(data, offset)
            body = data[offset + _LEN.size : offset + _LEN.size + size]
            if len(body) < size:
                break  # torn tail: never acted on
            out.append(_decoder.decode(body))
            offset += _LEN.size + size
        return out

    def close(self) -> None:
        os.close(self._fd)
