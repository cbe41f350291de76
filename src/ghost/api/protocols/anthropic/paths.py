"""The Messages API's paths (which shape their errors take: `ghost.api.route_table`)."""

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
