#!/usr/bin/env python3
"""idle.py ADDR N: open N keep-alive HTTP/1.1 connections to ADDR (host:port), send one
request on each (X-Session-Id: idle-<i>), read its response, and keep them open and idle
until killed. Prints "ready N" once all N have had their response (for conf/bench/tail.sh).
A connection that fails is retried once; the count of live ones is printed instead if some
never succeed ("ready K of N")."""
import asyncio
import sys


async def one(host, port, i, gate, held):
    async with gate:
        for _ in range(2):
            try:
                r, w = await asyncio.open_connection(host, port)
                w.write(f"GET / HTTP/1.1\r\nHost: bench\r\nX-Session-Id: idle-{i:05d}\r\n\r\n".encode())
                await w.drain()
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await r.readexactly(length)
                held.append((r, w))
                return
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await asyncio.sleep(0.1)


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    n = int(sys.argv[2])
    gate = asyncio.Semaphore(200)
    held = []
    await asyncio.gather(*(one(host, int(port), i, gate, held) for i in range(n)))
    print(f"ready {len(held)}" + ("" if len(held) == n else f" of {n}"), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
