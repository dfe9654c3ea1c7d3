"""A WebSocket client on Python's `websockets` library, for tests/it/deflate.rs.

It connects with the library's defaults (it offers permessage-deflate and
compresses what it sends once that is on), subscribes to one match and
prints, as one JSON line, the extensions the server answered and the
match's snapshot. Usage: websockets_client.py WS_URL MATCH_ID.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url: str, match: str) -> None:
    async with connect(url, max_size=1 << 24) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        # Compressed: the library compresses every data message once the
        # extension is on.
        await ws.send(json.dumps({"op": "subscribe", "matches": [match]}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "snapshot":
                break
        print(json.dumps({"extensions": extensions, "snapshot": frame}))


asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), timeout=20))
