"""Ghost: a self-hosted AI agent server that speaks the Ollama and OpenAI APIs."""

__version__ = "0.1.0"

# The Ollama version Ghost reports on /api/version. Ollama clients gate features on it.
OLLAMA_COMPAT_VERSION = "0.1.24"
