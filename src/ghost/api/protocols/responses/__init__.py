"""The OpenAI Responses API (`/v1/responses`) as an adapter over the chat service."""
