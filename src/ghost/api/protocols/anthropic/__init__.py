"""The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`).

`request` turns a Messages body into the agent's `ChatRequest` (messages OpenAI-shaped, as the
upstream takes them), `encoder` turns the turn's events into Anthropic's events (sent as SSE, or
folded into one message object), `routes` serves them.
"""
