"""The Messages API's paths: where its routes live and where errors take Anthropic's shape."""

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})
