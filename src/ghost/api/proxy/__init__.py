"""Catch-all proxy: any request Ghost does not handle goes to the upstream, streamed both ways.

One module per concern (docs/proxy.md describes the behaviour):

- `route`: where requests enter, the FastAPI catch-all route and the `ProxyFastPath` middleware;
- `forward`: one request end to end, and who notices a client that goes away in each phase;
- `target`: which request targets may be forwarded, and the upstream URL each becomes;
- `headers`: which headers cross in each direction;
- `sniff`: telling a streamed exchange from a plain one;
- `relay`: the upstream's reply as the client's response, with in-band errors mid-stream;
- the aiohttp session to the upstream is the upstream service's own, shared with the chat path
  (`Services.proxy_pool`; made in `ghost.llm.transport`).
"""

from ghost.api.proxy.forward import forward
from ghost.api.proxy.route import ProxyFastPath, router
__all__ = ["ProxyFastPath", "forward", "router"]
