"""Settings, read once from the environment and `.env` (environment wins), validated at start-up.

A misconfiguration is a start-up error with a message saying what to set, never a per-request 500.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BACKEND_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BACKEND_DIR.parent

LIST_CAP_LIMIT = 10_000  # the SQL functions clamp any cap to this as well
# PostgreSQL's built-in text search configurations (`\dF`): SEARCH_TEXT_CONFIG names one.
TextSearchConfig = Literal[
    "simple",
    "arabic",
    "armenian",
    "basque",
    "catalan",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hindi",
    "hungarian",
    "indonesian",
    "irish",
    "italian",
    "lithuanian",
    "nepali",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "serbian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
    "yiddish",
]


class StartupError(RuntimeError):
    """The process can not start as configured. The message says what to fix and names the
    setting; `python main.py` prints it as one line and exits non-zero (no traceback)."""


class Backend(StrEnum):
    SUPABASE = "supabase"
    POSTGRES = "postgres"
    EMBEDDED = "embedded"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(PROJECT_DIR / ".env", BACKEND_DIR / ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- where the memory lives -------------------------------------------------------------
    memory_backend: Backend | None = None
    supabase_url: str | None = None
    supabase_key: SecretStr | None = None
    database_url: SecretStr | None = None
    data_dir: Path = Path(".data")
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_statement_cache_size: int = Field(default=100, ge=0)
    storage_timeout_seconds: float = Field(default=5.0, gt=0, le=30)

    # --- auth -------------------------------------------------------------------------------
    supabase_jwt_secret: SecretStr | None = None
    supabase_jwks_url: str | None = None
    supabase_jwt_issuer: str | None = None
    auth_allow_anonymous: bool = True
    auth_leeway_seconds: int = Field(default=10, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=600, ge=1, le=600)

    # --- memory limits ----------------------------------------------------------------------
    memory_list_cap: int = Field(default=500, ge=1, le=LIST_CAP_LIMIT)
    memory_list_caps: dict[str, int] = Field(default_factory=dict)
    max_item_bytes: int = Field(default=32 * 1024, ge=256)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    # --- import (services/migration) ------------------------------------------------------
    import_max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1)

    # --- chat -------------------------------------------------------------------------------
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    chat_history_episodes: int = Field(default=20, ge=0)
    episodic_soft_cap: int = Field(default=200, ge=2)
    episodic_keep_after_compaction: int | None = Field(default=None, ge=0)
    chat_turns_per_minute: int = Field(default=30, ge=0, le=10_000)  # per user; 0: no limit
    report_max_episodes: int = Field(default=200, ge=1, le=10_000)  # newest episodes per report

    # --- recall (the conversation log) -----------------------------------------------------
    # PostgreSQL text search configuration: english stems and drops English stop words; use
    # simple (or another language's) for conversations in other languages.
    search_text_config: TextSearchConfig = "english"
    recall_k: int = Field(default=5, ge=0, le=50)
    embedding_base_url: str | None = None
    embedding_model: str | None = None
    embedding_api_key: SecretStr | None = None
    embedding_dimensions: int | None = Field(default=None, ge=1, le=16000)
    embedding_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Weight of the vector ranking against the text ranking (1.0) in hybrid search's fusion.
    search_vector_weight: float = Field(default=0.5, ge=0, le=10)

    # --- HTTP -------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)  # 0: any free port (tests)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "info"

    # --- demo page and metrics -------------------------------------------------------------
    demo_enabled: bool | None = None  # unset: on for the embedded backend only
    metrics_enabled: bool = True
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # set: a separate listener
    metrics_host: str = "127.0.0.1"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """Accept `https://a.example,https://b.example` as well as a JSON list."""
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                import json

                return json.loads(value)
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("supabase_url", "supabase_jwks_url", "llm_base_url", "embedding_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host, kept without its trailing slash."""
        if not value:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, such as https://<project>.supabase.co")
        return value.strip().rstrip("/")

    @field_validator("memory_list_caps")
    @classmethod
    def _caps_in_range(cls, value: dict[str, int]) -> dict[str, int]:
        from models import LIST_FIELDS

        for field, cap in value.items():
            if field not in LIST_FIELDS:
                raise ValueError(f"MEMORY_LIST_CAPS names {field!r}, not a list field")
            if not 1 <= cap <= LIST_CAP_LIMIT:
                raise ValueError(f"MEMORY_LIST_CAPS[{field!r}] must be within 1..{LIST_CAP_LIMIT}")
        return value

    @model_validator(mode="after")
    def _backend_is_configured(self) -> Self:
        if self.backend is Backend.SUPABASE and not (self.supabase_url and self.supabase_key):
            raise ValueError("MEMORY_BACKEND=supabase needs SUPABASE_URL and SUPABASE_KEY")
        if self.backend is Backend.POSTGRES and not self.database_url:
            raise ValueError("MEMORY_BACKEND=postgres needs DATABASE_URL")
        if self.embedding_base_url and not self.embedding_model:
            raise ValueError("EMBEDDING_BASE_URL needs EMBEDDING_MODEL")
        return self

    @property
    def embeddings_configured(self) -> bool:
        return bool(self.embedding_base_url and self.embedding_model)

    @model_validator(mode="after")
    def _compaction_fits(self) -> Self:
        """Compaction must leave room: it keeps fewer episodes than the soft cap, and the soft
        cap sits below the hard list cap (else episodes are dropped before being summarised)."""
        keep = self.episodic_keep_after_compaction
        if keep is not None and keep >= self.episodic_soft_cap:
            raise ValueError("EPISODIC_KEEP_AFTER_COMPACTION must be below EPISODIC_SOFT_CAP")
        if self.llm_configured and self.episodic_soft_cap >= self.list_cap("episodic_memory"):
            raise ValueError(
                "EPISODIC_SOFT_CAP must be below the episodic_memory cap (MEMORY_LIST_CAP or"
                " MEMORY_LIST_CAPS), else old episodes are dropped before they are summarised"
            )
        return self

    @cached_property
    def backend(self) -> Backend:
        """The explicit MEMORY_BACKEND, else supabase / postgres / embedded by what is set."""
        if self.memory_backend is not None:
            return self.memory_backend
        if self.supabase_url:
            return Backend.SUPABASE
        if self.database_url:
            return Backend.POSTGRES
        return Backend.EMBEDDED

    @property
    def resolved_data_dir(self) -> Path:
        """DATA_DIR, relative paths taken from the project root (not the working directory)."""
        path = self.data_dir.expanduser()
        return path if path.is_absolute() else PROJECT_DIR / path

    @property
    def jwks_url(self) -> str | None:
        """SUPABASE_JWKS_URL, else the project's own `/auth/v1/.well-known/jwks.json`."""
        if self.supabase_jwks_url:
            return self.supabase_jwks_url
        if self.supabase_url:
            return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"
        return None

    def list_cap(self, field: str) -> int:
        return self.memory_list_caps.get(field, self.memory_list_cap)

    @property
    def demo(self) -> bool:
        """DEMO_ENABLED, else on for the embedded backend only."""
        if self.demo_enabled is not None:
            return self.demo_enabled
        return self.backend is Backend.EMBEDDED

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    @property
    def compaction_keep(self) -> int:
        """Episodes left after a compaction: EPISODIC_KEEP_AFTER_COMPACTION, else half the cap."""
        if self.episodic_keep_after_compaction is not None:
            return self.episodic_keep_after_compaction
        return self.episodic_soft_cap // 2


def describe_settings_error(error: ValidationError) -> str:
    """A pydantic validation error of `Settings` as one line naming each setting (by its
    environment name) and what is wrong; a secret setting's value is never repeated."""
    problems = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a model validator: its message names the settings itself
            problems.append(message)
            continue
        name = str(item["loc"][0])
        field = Settings.model_fields.get(name)
        secret = field is not None and "SecretStr" in str(field.annotation)
        value = item.get("input")
        shown = f"={value}" if isinstance(value, str) and not secret and len(value) < 80 else ""
        problems.append(f"{name.upper()}{shown}: {message}")
    return "; ".join(problems)
