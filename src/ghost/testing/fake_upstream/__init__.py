"""A scripted OpenAI-compatible server for tests and benchmarks.

It is a real HTTP server (uvicorn on loopback), so everything between Ghost and it — pooling,
streaming, timeouts, disconnects — is exercised for real. Each chat-completion request takes the
next scripted `Reply` (or a default one); every request is recorded for assertions.

In-process:    fake = FakeUpstream().start(); fake.script(Reply(content="hi")); fake.url
Out-of-process: python -m ghost.testing.fake_upstream --port 9000
                then POST /_fake/script with a JSON list of Reply fields, GET /_fake/requests.

One module per concern:

- `script`: the `Reply` a chat request gets, and which queued one it takes. `script_for(text, ...)`
  queues replies only for requests whose last user message contains `text`, so concurrent turns
  get their own replies whatever order they arrive in; a `responder` function, when set, picks
  each reply from the request instead of the script;
- `wire`: a reply in OpenAI's wire format, whole or streamed (`n` > 1 choices, `logprobs`), a
  flood that never ends, and stable embeddings made from each input's hash (`/v1/embeddings`;
  `serves_embeddings = False` turns it into a 404);
- `window`: a `ContextWindow` (`fake.context = ContextWindow(...)`) makes it count every chat
  request's tokens (characters / `chars_per_token`, recorded as `tokens`) and refuse one that
  does not fit the way the server `kind` does: llama.cpp's 400 `exceed_context_size_error`,
  vLLM's 400 "maximum context length", or Ollama's silent cut of the oldest messages. It also
  answers that server's window probe (`/props`, `/api/show`, `/v1/models` `max_model_len`) and
  llama.cpp's `/tokenize` (`openai_routes`);
- `holds`: a chat `Reply(hold=name)` is held after `hold_after` streamed chunks (or, unanswered,
  before a non-streamed reply) until `release(name)`; `hold_state(name)` tells where it is;
- `openai_routes`: the model server's routes; `proxy_routes`: replies of every awkward shape for
  the proxy's tests (`/echo`, `/sse`, `/bytes`, `/slow`, `/hold`, `/broken`, `/hop`, `/status`);
- `server`: `FakeUpstream`, its state and its server thread; `serve`: the process entry point.
"""

from ghost.testing.fake_upstream.script import Reply
from ghost.testing.fake_upstream.serve import main
from ghost.testing.fake_upstream.server import DEFAULT_MODEL, MAX_RECORDED, FakeUpstream
from ghost.testing.fake_upstream.window import ContextWindow
from ghost.testing.fake_upstream.wire import (
    FLOOD_PIECE, ReplyOptions, choice_pieces, completion, fake_embedding, flood_stream, stream_chunks, token_logprob,
)

__all__ = ["DEFAULT_MODEL", "FLOOD_PIECE", "MAX_RECORDED", "ContextWindow", "FakeUpstream", "Reply", "ReplyOptions",
           "choice_pieces", "completion", "fake_embedding", "flood_stream", "main", "stream_chunks", "token_logprob"]
