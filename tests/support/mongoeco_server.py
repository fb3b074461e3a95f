"""A MongoDB wire-protocol server for tests (mongoeco), run by the python3.13 venv.

    .venv-mongoeco/bin/python tests/support/mongoeco_server.py PORTFILE [SQLITE_FILE [PORT]]

Prints nothing; writes ``host:port`` to PORTFILE once it listens, serves until killed.
With SQLITE_FILE the data persists across restarts (slower); else it lives in memory.
"""

import asyncio
import sys
from pathlib import Path

from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def main(port_file: Path, sqlite_file: str | None, port: int) -> None:
    engine = SQLiteEngine(sqlite_file) if sqlite_file else MemoryEngine()
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=port)
    address = await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{address.host}:{address.port}")
    tmp.replace(port_file)
    await asyncio.Event().wait()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sqlite_file = arguments[1] if len(arguments) > 1 else None
    asyncio.run(main(Path(arguments[0]), sqlite_file, int(arguments[2]) if len(arguments) > 2 else 0))
