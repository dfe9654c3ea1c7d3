"""A WebSocket client on Python's `websockets` library, for tests/it/deflate.rs.

It connects with the library's defaults (it offers permessage-deflate and
compresses what it sends once that is on), subscribes to one match and
prints, as one JSON line, the extensions the server answered and the
match's snapshot. Usage: websockets_client.py WS_URL MATCH_ID [window]:
with `window`, the offer also asks for server_max_window_bits=15, which
the library requires the answer to name back.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main(url: str, match: str, window: bool) -> None:
    options = {}
    if window:
        factory = ClientPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=True)
        options = {"compression": None, "extensions": [factory]}
    async with connect(url, max_size=1 << 24, **options) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        # Compressed: the library compresses every data message once the
        # extension is on.
        await ws.send(json.dumps({"op": "subscribe", "matches": [match]}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "snapshot":
                break
        print(json.dumps({"extensions": extensions, "snapshot": frame}))


window = sys.argv[3:] == ["window"]
asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], window), timeout=20))
