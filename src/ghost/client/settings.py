"""Where the terminal client finds Ghost: flags, else environment (GHOST_URL, GHOST_API_KEY...)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ghost.config import DEFAULT_API_KEY, Settings

DEFAULT_URL = f"http://127.0.0.1:{Settings.model_fields['port'].default}"


class ClientSettings(BaseSettings):
    # Same prefix as the server's settings: GHOST_API_KEY is one key for both ends.
    model_config = SettingsConfigDict(env_prefix="GHOST_", extra="ignore")

    url: str = Field(DEFAULT_URL, description="Address of the running Ghost.")
    api_key: str = Field(DEFAULT_API_KEY, description="Ghost's API key.")
    session: str = Field("default", description="Conversation/workspace session id on the server.")
    client_timeout: float = Field(
        600.0, gt=0, description="Seconds to wait for Ghost's next bytes before giving up."
    )
    client_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to Ghost.")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")
