"""Where the terminal client finds Ghost: flags, else environment (GHOST_URL, GHOST_API_KEY...)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ghost.config import KEY_FILE_NAME, Settings
from ghost.keyfile import KeyFileError, read_key

DEFAULT_URL = f"http://127.0.0.1:{Settings.model_fields['port'].default}"


class ClientSettings(BaseSettings):
    # Same prefix as the server's settings: GHOST_API_KEY is one key for both ends.
    model_config = SettingsConfigDict(env_prefix="GHOST_", extra="ignore")

    url: str = Field(DEFAULT_URL, description="Address of the running Ghost.")
    api_key: str | None = Field(
        None, description="Ghost's API key. Unset: the key a Ghost on this machine generated, read "
        "from <home>/api_key.")
    home: Path = Field(Path("~/.ghost"), description="Ghost's home directory (for its generated key).")
    session: str = Field("default", description="Conversation/workspace session id on the server.")
    client_timeout: float = Field(
        600.0, gt=0, description="Seconds to wait for Ghost's next bytes before giving up."
    )
    client_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to Ghost.")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    def resolved_key(self) -> str:
        """The key to send: the configured one, else the generated one in home, else none."""
        if self.api_key is not None:
            return self.api_key
        try:
            return read_key(self.home.expanduser() / KEY_FILE_NAME) or ""
        except KeyFileError:
            return ""  # no readable key: requests go without one and Ghost's 401 says what to do
