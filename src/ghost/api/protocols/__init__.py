"""Chat protocols beyond OpenAI Chat Completions and Ollama: each an adapter over the one chat service.

A protocol's folder holds its request parser (its body -> the agent's `ChatRequest`), its encoder
(the turn's events -> its wire format) and its routes. Nothing below `api/` knows they exist.
"""
