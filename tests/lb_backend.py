"""A backend process for the load-balancing tests: ``python tests/lb_backend.py PORT NAME``.

Only the standard library, so it starts fast on a busy machine. Every path answers
``{"name": NAME, "path": ..., "body": <bytes received>}`` with the current ``status``
after the current ``delay``; ``/healthz`` answers ``health``. ``POST /_control`` with a
JSON object changes ``status``, ``delay``, ``health`` and ``reset`` (drop the connection
once a request arrived, unanswered); ``GET /_count`` tells how many requests (not counting
/healthz and control) arrived. Killed with SIGKILL, it drops its connections as a crashed
instance does. HTTP/1.1 keep-alive; request bodies by Content-Length or chunked.
"""

from __future__ import annotations

import asyncio
import json
import sys

STATE: dict[str, float] = {"status": 200, "delay": 0.0, "health": 200, "count": 0, "reset": 0}


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()).strip():  # trailers, then the blank line
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readline()
    return await reader.readexactly(int(headers.get("content-length", "0")))


async def serve(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (field := await reader.readline()) not in (b"\r\n", b"\n", b""):
                key, _, value = field.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await read_body(reader, headers)
            status, doc = int(STATE["status"]), {}
            if target == "/healthz":
                status, doc = int(STATE["health"]), {"health": True}
            elif target == "/_control":
                STATE.update(json.loads(body))
                status, doc = 200, dict(STATE)
            elif target == "/_count":
                status, doc = 200, dict(STATE)
            else:
                STATE["count"] += 1
                if STATE["reset"]:
                    writer.transport.abort()
                    return
                if STATE["delay"]:
                    await asyncio.sleep(STATE["delay"])
                doc = {"name": name, "path": target, "method": method, "body": len(body)}
            data = json.dumps(doc).encode()
            head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            writer.write(f"{head}content-length: {len(data)}\r\n\r\n".encode() + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.transport.abort()


async def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    server = await asyncio.start_server(
        lambda r, w: serve(name, r, w), "127.0.0.1", port, reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
