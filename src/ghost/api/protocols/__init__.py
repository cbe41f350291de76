"""The chat protocols beyond OpenAI Chat Completions and Ollama, one adapter package each: a
request parser into the agent's `ChatRequest`, an encoder from the turn's events, an error shape."""
