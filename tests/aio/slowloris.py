"""A slowloris client for tests/aio/test_serve.py, run as its own process (its event loop must not
share a GIL with the client whose latency the test measures).

    python -m tests.aio.slowloris PORT CAFILE SOURCE COUNT

Holds COUNT TLS connections from SOURCE to 127.0.0.1:PORT, each sending the start of a request and
then one header byte every 5 s, and reopens each one the server closes. On SIGTERM it prints how
many connections it opened in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys

HOST = "127.0.0.1"


async def hold(port: int, context: ssl.SSLContext, source: str, opened: list[int]) -> None:
    while True:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, ssl=context, local_addr=(source, 0)), 10
            )
            opened[0] += 1
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
            while True:
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(100), 5) == b"":
                        break
                writer.write(b"a")
        except (OSError, ssl.SSLError, TimeoutError):
            pass
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.2)


async def main(port: int, cafile: str, source: str, count: int) -> None:
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    opened = [0]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(hold(port, context, source, opened)) for _ in range(count)]
    print("started", flush=True)
    await stop.wait()
    # The count first: on a loaded machine, unwinding 300 TLS connections can outlast the test's
    # patience, and a kill then must not lose it.
    print(opened[0], flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
