"""A MongoDB wire-protocol server for tests (mongoeco), run by the python3.13 venv.

    .venv-mongoeco/bin/python tests/support/mongoeco_server.py PORTFILE

Prints nothing; writes ``host:port`` to PORTFILE once it listens, serves until killed.
"""

import asyncio
import sys
from pathlib import Path

from mongoeco.engines.memory import MemoryEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def main(port_file: Path) -> None:
    server = AsyncMongoEcoProxyServer(engine=MemoryEngine(), host="127.0.0.1", port=0)
    address = await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{address.host}:{address.port}")
    tmp.replace(port_file)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
