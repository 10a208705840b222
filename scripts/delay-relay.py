#!/usr/bin/env python3
# A TCP relay that adds a one-way delay to every chunk in both directions (order kept), for
# measuring delivery over a network with a round-trip time: 127.0.0.1:LISTEN -> 127.0.0.1:TARGET.
# Usage: scripts/delay-relay.py LISTEN TARGET DELAY_MS
import asyncio, sys
LISTEN, TARGET, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
async def pipe(r, w):
    q = asyncio.Queue()
    async def sender():
        while True:
            t, data = await q.get()
            if data is None: break
            d = t + DELAY - asyncio.get_running_loop().time()
            if d > 0: await asyncio.sleep(d)
            w.write(data); await w.drain()
        w.close()
    s = asyncio.create_task(sender())
    while True:
        data = await r.read(65536)
        await q.put((asyncio.get_running_loop().time(), data or None))
        if not data: break
    await s
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection("127.0.0.1", TARGET)
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw), return_exceptions=True)
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with srv: await srv.serve_forever()
asyncio.run(main())
