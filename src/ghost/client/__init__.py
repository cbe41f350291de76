"""The terminal client: `ghost chat`, `ghost workspace save|load`, `ghost upload`, `ghost download`.

It talks to a running Ghost over its HTTP API only, like any other client would:
settings (settings.py) -> one connection with error translation (connection.py) -> the chat stream
parser (sse.py), file transfers with progress (transfer.py), the chat session (chat.py) -> the
subcommands (commands.py).
"""
