"""A MongoDB wire-protocol server that acknowledges every write and stores nothing.

    .venv/bin/python benchmarks/null_mongo.py ADDRESS_FILE

It isolates the client side of a load: pymongo builds and sends the very messages it would
send to MongoDB (BSON encoding, batching, the socket), and the server only reads them and
counts the documents per collection (so that ``count`` answers like a server that stored
them). Figures measured on it are a ceiling that a real server can only lower; the benchmark
report says so beside each. Answers ``hello``/``isMaster`` (OP_QUERY and OP_MSG), ``insert``,
``count``, ``count_documents`` (every document received: filters are not evaluated), ``drop``
and any other command with ``ok: 1`` (other cursors come back empty).
"""

from __future__ import annotations

import asyncio
import collections
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
    # Every inserted document has an ObjectId `_id` (pymongo adds one to those without), so
    # counting that element's header counts the documents at C speed; walking the documents
    # in Python would put ~0.3 us per document on the client's critical path. (A false match
    # needs these 5 bytes inside a value: not in these benchmarks' documents.)
    return payload.count(b"\x07_id\x00", offset, end)


# Documents received per namespace: what `count` (estimated_document_count) answers.
received: collections.Counter[str] = collections.Counter()


def _reply_to(command: dict[str, Any], documents: int) -> dict[str, Any]:
    name = next(iter(command), "")
    namespace = f"{command.get('$db', 'admin')}.{command.get(name)}"
    if name.lower() in ("hello", "ismaster"):
        return {**HELLO, "localTime": dt.datetime.now(dt.UTC)}
    if name == "insert":
        received[namespace] += documents
        return {"n": documents, "ok": 1.0}
    if name in ("delete", "update"):
        return {"n": 0, "ok": 1.0}
    if name == "aggregate" and any("$group" in stage for stage in command.get("pipeline", [])):
        # count_documents: answered with every document received (filters are not evaluated).
        batch = [{"_id": 1, "n": received[namespace]}] if received[namespace] else []
        return {"cursor": {"id": 0, "ns": namespace, "firstBatch": batch}, "ok": 1.0}
    if name in ("find", "aggregate", "listIndexes", "listCollections"):
        return {"cursor": {"id": 0, "ns": namespace, "firstBatch": []}, "ok": 1.0}
    if name == "count":
        return {"n": received[namespace], "ok": 1.0}
    if name == "drop":
        received.pop(namespace, None)
    if name == "dropDatabase":
        for stored in [ns for ns in received if ns.startswith(f"{command.get('$db')}.")]:
            del received[stored]
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
