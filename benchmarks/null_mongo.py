"""A MongoDB wire-protocol server that acknowledges every write and stores nothing.

    .venv/bin/python benchmarks/null_mongo.py ADDRESS_FILE

It isolates the client side of a load: pymongo builds and sends the very messages it would
send to MongoDB (BSON encoding, batching, the socket), and the server's cost is only reading
them. Figures measured on it are the ceiling a real server can only lower; the benchmark
report says so next to each. Answers ``hello``/``isMaster`` (OP_QUERY and OP_MSG), ``insert``
(``n`` = the documents received) and any other command with ``ok: 1`` (cursors come back empty).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import sys
from pathlib import Path
from typing import Any

import bson

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
HEADER = struct.Struct("<iiii")
HELLO = {
    "helloOk": True,
    "ismaster": True,
    "isWritablePrimary": True,
    "maxBsonObjectSize": 16 * 1024 * 1024,
    "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000,
    "logicalSessionTimeoutMinutes": 30,
    "minWireVersion": 0,
    "maxWireVersion": 21,
    "readOnly": False,
    "ok": 1.0,
}


def _count_documents(payload: bytes, offset: int, end: int) -> int:
    count = 0
    while offset < end:
        offset += int.from_bytes(payload[offset : offset + 4], "little")
        count += 1
    return count


def _reply_to(command: dict[str, Any], documents: int) -> dict[str, Any]:
    name = next(iter(command), "")
    if name.lower() in ("hello", "ismaster"):
        return {**HELLO, "localTime": dt.datetime.now(dt.UTC)}
    if name in ("insert", "delete", "update"):
        return {"n": documents, "ok": 1.0}
    if name in ("find", "aggregate", "listIndexes", "listCollections"):
        return {"cursor": {"id": 0, "ns": f"{command.get('$db', 'db')}.{command[name]}", "firstBatch": []}, "ok": 1.0}
    if name == "count":
        return {"n": 0, "ok": 1.0}
    return {"ok": 1.0}


def _answer_msg(payload: bytes) -> bytes:
    flags = int.from_bytes(payload[0:4], "little")
    end = len(payload) - (4 if flags & 1 else 0)
    offset, command, documents = 4, {}, 0
    while offset < end:
        kind = payload[offset]
        offset += 1
        if kind == 0:
            size = int.from_bytes(payload[offset : offset + 4], "little")
            command = bson.decode(payload[offset : offset + size])
            offset += size
        else:
            size = int.from_bytes(payload[offset : offset + 4], "little")
            name_end = payload.index(b"\0", offset + 4)
            documents += _count_documents(payload, name_end + 1, offset + size)
            offset += size
    return b"\0\0\0\0" + b"\0" + bson.encode(_reply_to(command, documents))


def _answer_query(payload: bytes) -> bytes:
    name_end = payload.index(b"\0", 4)
    size = int.from_bytes(payload[name_end + 9 : name_end + 13], "little")
    command = bson.decode(payload[name_end + 9 : name_end + 9 + size])
    reply = bson.encode(_reply_to(command, 0))
    return struct.pack("<iqii", 0, 0, 0, 1) + reply


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            length, request_id, _, opcode = HEADER.unpack(await reader.readexactly(HEADER.size))
            payload = await reader.readexactly(length - HEADER.size)
            if opcode == OP_MSG:
                body, reply_opcode = _answer_msg(payload), OP_MSG
            elif opcode == OP_QUERY:
                body, reply_opcode = _answer_query(payload), OP_REPLY
            else:
                raise ValueError(f"opcode {opcode} is not served")
            writer.write(HEADER.pack(HEADER.size + len(body), 0, request_id, reply_opcode) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(address_file: Path) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    address_file.write_text(f"mongodb://127.0.0.1:{port}/")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
