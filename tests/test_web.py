"""The shared web stack's listening socket (web.app.bind)."""

from __future__ import annotations

import asyncio
import socket

from mediacluster.web.app import bind


def test_accepted_connections_send_without_waiting_for_acks():
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are TCP;
    a listening socket made with proto 0 left it on, and every response then waited for the
    client's delayed ACK (~44 ms per request on loopback)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main():
        done = asyncio.Event()

        def on_client(reader, writer):
            s = writer.get_extra_info("socket")
            seen.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            done.set()

        server = await asyncio.start_server(on_client, sock=sock)
        async with server:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(done.wait(), 10)
            w.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
