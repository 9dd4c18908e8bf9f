"""Memory repository on Supabase: PostgREST, as the user, over the process's shared httpx pool.

Each operation is ONE PostgREST request built by postgrest-py on a per-request client that
carries `apikey: SUPABASE_KEY` and the user's own bearer token, so RLS and the SQL functions
of `supabase_schema.sql` (called by RPC with named arguments) see that user. Reads select the
user's row (`user_id=eq.<uid>`); field reads (paged in SQL) and the chat context are function
calls, as is every write. PostgREST's error bodies
(`code`, `message`, `details`, `hint`) are mapped to domain errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import httpx
from postgrest import AsyncPostgrestClient
from postgrest.base_request_builder import RequestConfig
from postgrest.exceptions import APIError, APIErrorFromJSON, generate_default_error_message
from pydantic import ValidationError

from config import Settings
from errors import (
    InvalidToken,
    InvalidValue,
    ServiceError,
    StorageError,
    StorageUnavailable,
)
from models import (
    AppendResult,
    ChatContext,
    ChildLink,
    ImportResult,
    MemoryDocument,
    MemoryExport,
    MemoryField,
    Recall,
    ReportContext,
    SearchResult,
    StoredValue,
    User,
)
from repositories.postgrest_clients import (
    SupabaseCredentials,
    anon_postgrest_client,
    user_postgrest_client,
)
from repositories.sql_values import vector_text
from repositories.storage_errors import (
    begun_turn,
    error_for_sqlstate,
    field_value,
    stored_daily_turns,
    validated,
)

logger = logging.getLogger(__name__)

TABLE = "memories"
DOCUMENT_COLUMNS = (*(f.value for f in MemoryField), "version", "updated_at")

_TOKEN_CODES = frozenset({"PGRST301", "PGRST302", "PGRST303"})  # JWT refused by PostgREST
_UNAVAILABLE_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})

Request = RequestConfig[httpx.AsyncClient]


def api_error_from(response: httpx.Response) -> APIError:
    """The APIError postgrest-py's `execute()` would raise for this response (a JSON error body,
    or for any other body the status, or PostgREST's code from `Proxy-Status`)."""
    try:
        return APIError(dict(APIErrorFromJSON.model_validate_json(response.content)))
    except ValidationError:
        return APIError(generate_default_error_message(response))


def storage_error_for(status: int, error: APIError) -> ServiceError:
    """Map a PostgREST error (HTTP status + body) to a domain error: PostgREST's own codes and
    statuses first, then the database's SQLSTATE as the Postgres repository reads it."""
    code = error.code or ""
    if code in _TOKEN_CODES or (code == "42501" and status == 401):
        return InvalidToken()  # PostgREST refused the token, or saw no user (anon)
    mapped = error_for_sqlstate(code, error.message or "")
    if mapped is not None:
        return mapped
    if status >= 500 or status == 429 or code in _UNAVAILABLE_CODES:
        logger.warning("Supabase unavailable: HTTP %s, code %s", status, code or "-")
        return StorageUnavailable()
    logger.error(
        "Supabase refused the request: HTTP %s, code %s: %s (hint: %s)",
        status,
        code or "-",
        error.message,
        error.hint,
    )
    return StorageError()


class SupabaseMemoryRepository:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._credentials = SupabaseCredentials.from_settings(settings)
        self._http = http
        self._timeout = settings.storage_timeout_seconds
        self._text_config = settings.search_text_config
        self._vector_weight = settings.search_vector_weight

    def _client(self, user: User) -> AsyncPostgrestClient:
        if not user.token:
            raise InvalidToken()
        return user_postgrest_client(self._credentials, self._http, user.token)

    async def _send(self, request: Request) -> httpx.Response:
        """Send one built request, once, within the storage timeout.

        postgrest-py's `execute()` drops the HTTP status, which tells "retry later" (5xx) from
        a refusal; so the request it built is sent here and its errors parsed as it would.
        """
        try:
            pending: Awaitable[httpx.Response] = request.send(httpx.Headers())  # encodes the body
        except (ValueError, TypeError) as exc:
            raise InvalidValue("the value is not JSON (NaN, Infinity or another type)") from exc
        try:
            async with asyncio.timeout(self._timeout):
                return await pending
        except (TimeoutError, httpx.RequestError) as exc:  # transport, decoding, redirects
            logger.warning("Supabase unavailable: %s", type(exc).__name__)
            raise StorageUnavailable() from exc

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        """The success body, or the domain error for an error response."""
        if not response.is_success:
            raise storage_error_for(response.status_code, api_error_from(response))
        try:
            return response.json()
        except ValueError as exc:
            logger.error("Supabase answered HTTP %s without a JSON body", response.status_code)
            raise StorageError() from exc

    async def _select_row(self, user: User, columns: tuple[str, ...]) -> dict[str, Any] | None:
        """The user's row (these columns), or None when there is none."""
        request = (
            self._client(user).from_(TABLE).select(*columns).eq("user_id", str(user.id)).request
        )
        rows = self._json(await self._send(request))
        if (
            not isinstance(rows, list)
            or len(rows) > 1
            or not all(isinstance(r, dict) for r in rows)
        ):
            logger.error("unexpected Supabase rows for one user: %s", type(rows).__name__)
            raise StorageError()
        return rows[0] if rows else None

    async def _rpc(self, user: User, function: str, args: dict[str, Any]) -> Any:
        """POST /rpc/<function> with named arguments; the function's JSON result."""
        request = self._client(user).rpc(function, args).request
        return self._json(await self._send(request))

    async def read_document(self, user: User) -> MemoryDocument:
        row = await self._select_row(user, DOCUMENT_COLUMNS)
        return MemoryDocument() if row is None else validated(MemoryDocument, row)

    async def read_field(
        self,
        user: User,
        field: MemoryField,
        *,
        limit: int | None = None,
        before: str | None = None,
    ) -> tuple[Any, int]:
        """One RPC; paging arguments only when given (PostgREST fills in the defaults)."""
        args: dict[str, Any] = {"p_field": field.value}
        if limit is not None:
            args["p_limit"] = limit
        if before is not None:
            args["p_before"] = before
        return field_value(field, await self._rpc(user, "memory_read_field", args))

    async def chat_context(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        args: dict[str, Any] = {"p_history": history, **self._recall_args(recall)}
        if turn_ids:
            args["p_turn_ids"] = list(turn_ids)
        return validated(ChatContext, await self._rpc(user, "memory_chat_context", args))

    def _recall_args(self, recall: Recall | None) -> dict[str, Any]:
        """The chat context's recall search arguments (none, so PostgREST's defaults: no
        recall)."""
        if recall is None or recall.k == 0:
            return {}
        return {
            "p_recall_query": recall.query,
            "p_recall_k": recall.k,
            "p_config": self._text_config,
            "p_embedding": vector_text(recall.embedding),
            "p_vector_weight": self._vector_weight,
        }

    async def search(
        self, user: User, query: str, *, limit: int, embedding: list[float] | None = None
    ) -> SearchResult:
        args = {
            "p_query": query,
            "p_limit": limit,
            "p_config": self._text_config,
            "p_embedding": vector_text(embedding),
            "p_vector_weight": self._vector_weight,
        }
        return validated(SearchResult, await self._rpc(user, "memory_search", args))

    async def save_embeddings(self, user: User, embeddings: dict[str, list[float]]) -> int:
        stored = await self._rpc(user, "memory_save_embeddings", {"p_embeddings": embeddings})
        if not isinstance(stored, int) or isinstance(stored, bool):
            logger.error("unexpected Supabase result for memory_save_embeddings")
            raise StorageError()
        return stored

    async def set_field(
        self, user: User, field: MemoryField, value: Any, *, expected_version: int | None
    ) -> StoredValue:
        args = {
            "p_field": field.value,
            "p_value": value,
            "p_expected_version": expected_version,
            "p_config": self._text_config,
        }
        return validated(StoredValue, await self._rpc(user, "memory_set_field", args))

    async def merge_field(
        self,
        user: User,
        field: MemoryField,
        patch: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> StoredValue:
        args = {"p_field": field.value, "p_patch": patch, "p_expected_version": expected_version}
        return validated(StoredValue, await self._rpc(user, "memory_merge_field", args))

    async def append_items(
        self,
        user: User,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
        idempotency_key: str | None = None,
        embeddings: dict[str, list[float]] | None = None,
    ) -> AppendResult:
        """One RPC; `p_idempotency_key` and `p_embeddings` only when given."""
        args: dict[str, Any] = {
            "p_field": field.value,
            "p_items": items,
            "p_cap": cap,
            "p_config": self._text_config,
        }
        if idempotency_key is not None:
            args["p_idempotency_key"] = idempotency_key
        if embeddings:
            args["p_embeddings"] = embeddings
        return validated(AppendResult, await self._rpc(user, "memory_append_items", args))

    async def remove_item(self, user: User, field: MemoryField, item_id: str) -> bool:
        args = {"p_field": field.value, "p_item_id": item_id}
        result = await self._rpc(user, "memory_remove_item", args)
        return result is not None

    async def erase(self, user: User) -> bool:
        result = await self._rpc(user, "memory_erase", {})
        if not isinstance(result, bool):
            logger.error("unexpected Supabase result for memory_erase: %s", type(result).__name__)
            raise StorageError()
        return result

    async def ping(self) -> None:
        """PostgREST and its database answer: a zero-row read with the API key alone.

        PostgREST runs it as `anon`, which may not read memories, so the expected answer is the
        database's own `42501` refusal (or an empty 200): either proves gateway, PostgREST, the
        database and the schema all answer. A gateway refusing the API key, a missing table or
        any 5xx is not ready. (`/rest/v1/` is no probe: Supabase refuses it to anon keys.)
        """
        client = anon_postgrest_client(self._credentials, self._http)
        request = client.from_(TABLE).select("version").limit(0).request
        response = await self._send(request)
        if response.is_success:
            return
        error = api_error_from(response)
        code = error.code or ""
        if response.status_code in (401, 403) and code == "42501":
            return
        logger.warning("Supabase not ready: HTTP %s, code %s", response.status_code, code or "-")
        raise StorageUnavailable()

    async def compact_items(
        self,
        user: User,
        field: MemoryField,
        item_ids: list[str],
        *,
        summary_field: MemoryField,
        summary_patch: dict[str, Any],
    ) -> bool:
        args = {
            "p_field": field.value,
            "p_item_ids": item_ids,
            "p_summary_field": summary_field.value,
            "p_summary_patch": summary_patch,
        }
        return await self._rpc(user, "memory_compact", args) is not None

    async def import_document(
        self,
        user: User,
        document: dict[str, Any],
        *,
        caps: dict[str, int],
        dry_run: bool = False,
    ) -> ImportResult:
        args = {
            "p_document": document,
            "p_caps": caps,
            "p_dry_run": dry_run,
            "p_config": self._text_config,
        }
        return validated(ImportResult, await self._rpc(user, "memory_import_document", args))

    async def export_document(self, user: User) -> MemoryExport:
        """One RPC (`memory_export_document`); a JSON null means no row yet."""
        result = await self._rpc(user, "memory_export_document", {})
        return MemoryExport() if result is None else validated(MemoryExport, result)

    # --- chat limits and guardians (supabase_schema.sql, "Guardians"): one RPC each ----------

    async def begin_chat_turn(
        self,
        user: User,
        *,
        history: int,
        turn_ids: tuple[str, str] | None = None,
        turns_per_minute: int | None = None,
        recall: Recall | None = None,
    ) -> ChatContext:
        args: dict[str, Any] = {
            "p_history": history,
            "p_turns_per_minute": turns_per_minute,
            **self._recall_args(recall),
        }
        if turn_ids:
            args["p_turn_ids"] = list(turn_ids)
        return begun_turn(await self._rpc(user, "chat_begin_turn", args))

    async def guardian_children(self, user: User) -> list[ChildLink]:
        result = await self._rpc(user, "guardian_children", {})
        if not isinstance(result, list):
            logger.error("unexpected Supabase result for guardian_children")
            raise StorageError()
        return [validated(ChildLink, link) for link in result]

    async def guardian_read_document(self, user: User, child_id: UUID) -> MemoryDocument:
        result = await self._rpc(user, "guardian_read_document", {"p_child_id": str(child_id)})
        return MemoryDocument() if result is None else validated(MemoryDocument, result)

    async def guardian_set_field(
        self, user: User, child_id: UUID, field: MemoryField, value: list[dict[str, Any]]
    ) -> StoredValue:
        args = {"p_child_id": str(child_id), "p_field": field.value, "p_value": value}
        return validated(StoredValue, await self._rpc(user, "guardian_set_field", args))

    async def guardian_append_items(
        self,
        user: User,
        child_id: UUID,
        field: MemoryField,
        items: list[dict[str, Any]],
        *,
        cap: int,
    ) -> AppendResult:
        args = {
            "p_child_id": str(child_id),
            "p_field": field.value,
            "p_items": items,
            "p_cap": cap,
        }
        return validated(AppendResult, await self._rpc(user, "guardian_append_items", args))

    async def guardian_remove_item(
        self, user: User, child_id: UUID, field: MemoryField, item_id: str
    ) -> bool:
        args = {"p_child_id": str(child_id), "p_field": field.value, "p_item_id": item_id}
        return await self._rpc(user, "guardian_remove_item", args) is not None

    async def guardian_report_context(
        self, user: User, child_id: UUID, *, max_episodes: int
    ) -> ReportContext:
        args = {"p_child_id": str(child_id), "p_max_episodes": max_episodes}
        return validated(ReportContext, await self._rpc(user, "guardian_report_context", args))

    async def guardian_store_report(
        self,
        user: User,
        child_id: UUID,
        report: dict[str, Any],
        *,
        after_episode_id: str | None,
        cap: int,
    ) -> AppendResult | None:
        args = {
            "p_child_id": str(child_id),
            "p_report": report,
            "p_after_episode_id": after_episode_id,
            "p_cap": cap,
        }
        result = await self._rpc(user, "guardian_store_report", args)
        return None if result is None else validated(AppendResult, result)

    async def guardian_set_chat_limit(
        self, user: User, child_id: UUID, daily_turns: int | None
    ) -> int | None:
        args = {"p_child_id": str(child_id), "p_daily_turns": daily_turns}
        return stored_daily_turns(await self._rpc(user, "guardian_set_chat_limit", args))

    async def guardian_erase_child(self, user: User, child_id: UUID) -> bool:
        result = await self._rpc(user, "guardian_erase_child", {"p_child_id": str(child_id)})
        if not isinstance(result, bool):
            logger.error("unexpected Supabase result for guardian_erase_child")
            raise StorageError()
        return result
