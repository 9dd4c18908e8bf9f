"""What one chat turn is made of: the prompt built from one read of the memory (its chat
context), and the two episodes it stores. Pure functions and values, no I/O: the chat service
does the calls."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from errors import IdempotencyConflict
from models import ChatContext, JsonObject, SearchHit, User
from services.chat.llm import ChatMessage
from services.memory_service import encoded_size

SYSTEM_PREAMBLE = (
    "You are the user's AI companion. Be the companion described under Identity, follow the "
    "Instructions, and use what you remember to keep the conversation personal and continuous."
)
SUMMARY_INSTRUCTIONS = (
    "You keep the long-term memory of an AI companion. Merge the previous summary and the "
    "conversation below into one updated summary in plain text: who the user is, what they "
    "like, important events, promises and ongoing topics. Leave out small talk. Answer with "
    "the summary only."
)
_ITEM_METADATA = ("id", "created_at")
_TEXT_KEYS = ("text", "instruction", "content")
_EPISODE_NAMESPACE = uuid.UUID("0b7f3c9e-6a0f-4a57-9d53-2f1d8f0c5b21")
_ROLES = ("user", "assistant")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render_object(value: JsonObject) -> str:
    """An object field as `- key: value` lines (keys in stored order)."""
    return "\n".join(f"- {key}: {_text(item)}" for key, item in value.items())


def render_items(items: list[JsonObject]) -> str:
    """A list field as one line per item, without the server's `id`/`created_at`; an item
    holding only a text (`text`, `instruction` or `content`) is shown as that text."""
    lines = []
    for item in items:
        body = {k: v for k, v in item.items() if k not in _ITEM_METADATA}
        if len(body) == 1 and next(iter(body)) in _TEXT_KEYS:
            lines.append(f"- {_text(next(iter(body.values())))}")
        elif body:
            lines.append("- " + "; ".join(f"{k}: {_text(v)}" for k, v in body.items()))
    return "\n".join(lines)


def render_recalled(hits: list[SearchHit]) -> str:
    """Recalled episodes, oldest first, each with its date and who said it."""
    lines = []
    for hit in sorted(hits, key=lambda h: str(h.created_at or "")):
        when = str(hit.created_at)[:10] if hit.created_at else "undated"
        episode = hit.episode
        if is_episode(episode):
            lines.append(f"- {when}, {episode['role']}: {episode['content']}")
        else:
            body = {k: v for k, v in episode.items() if k not in _ITEM_METADATA}
            lines.append(f"- {when}: {_text(body)}")
    return "\n".join(lines)


def system_prompt(context: ChatContext) -> str:
    """Preamble, then each non-empty part of the memory under its own heading."""
    sections = [
        ("Identity", render_object(context.identity)),
        ("Instructions", render_items(context.core_instructions)),
        ("What you remember from earlier conversations", render_object(context.long_term_summary)),
        ("Right now", render_object(context.current_state)),
        ("Earlier moments that may matter now", render_recalled(context.recalled)),
    ]
    parts = [SYSTEM_PREAMBLE, *(f"## {title}\n{body}" for title, body in sections if body)]
    return "\n\n".join(parts)


def is_episode(item: JsonObject) -> bool:
    """A conversation episode (items appended by other clients may be anything else)."""
    return item.get("role") in _ROLES and isinstance(item.get("content"), str)


def history(recent: list[JsonObject]) -> list[ChatMessage]:
    """The newest episodic items as chat messages, oldest first (items that are not
    conversation episodes, appended by other clients, are left out)."""
    return [ChatMessage(role=e["role"], content=e["content"]) for e in recent if is_episode(e)]


SUMMARY_LINE_CHARS = 1000  # per episode in a summary prompt: the prompt stays within context


def _clip(line: str) -> str:
    return line if len(line) <= SUMMARY_LINE_CHARS else line[: SUMMARY_LINE_CHARS - 1] + "…"


def summary_messages(previous: JsonObject, episodes: list[JsonObject]) -> list[ChatMessage]:
    """The prompt asking the LLM to fold `episodes` into the previous summary text."""
    summary = previous.get("summary")
    conversation = "\n".join(
        _clip(
            f"{e['role']}: {e['content']}"
            if is_episode(e)
            else f"note: {_text({k: v for k, v in e.items() if k not in _ITEM_METADATA})}"
        )
        for e in episodes
    )
    request = (
        f"Previous summary:\n{summary if isinstance(summary, str) and summary else '(none)'}"
        f"\n\nConversation (oldest first):\n{conversation}"
    )
    return [
        ChatMessage(role="system", content=SUMMARY_INSTRUCTIONS),
        ChatMessage(role="user", content=request),
    ]


@dataclass(frozen=True, slots=True)
class TurnResult:
    reply: str
    episodes: list[JsonObject]  # as stored: the user's message, then the reply


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn ready to run: the chat context as read, the prompt, and its two episodes' ids.

    The ids derive from (user, turn key), so storing a turn twice stores it once; with a
    client's Idempotency-Key, `stored` holds the episodes a previous try already stored."""

    user: User
    message: str
    context: ChatContext
    prompt: list[ChatMessage]
    episode_ids: tuple[str, str]
    stored: TurnResult | None = None
    embedding: list[float] | None = None  # the message's, when it was embedded for recall

    @staticmethod
    def episode_ids_for(user: User, key: str) -> tuple[str, str]:
        """The ids of a turn's two episodes: fixed by (user, turn key)."""
        user_id, reply_id = (
            str(uuid.uuid5(_EPISODE_NAMESPACE, f"{user.id}/chat/{key}/{role}")) for role in _ROLES
        )
        return user_id, reply_id

    @classmethod
    def build(
        cls,
        user: User,
        message: str,
        context: ChatContext,
        *,
        episode_ids: tuple[str, str],
        keyed: bool,
        embedding: list[float] | None = None,
    ) -> Turn:
        """The turn of `message` on `context` (read with `episode_ids` as its turn ids when the
        client sent a key: `stored` is then the turn an earlier try stored)."""
        prompt = [
            ChatMessage(role="system", content=system_prompt(context)),
            *history(context.recent_episodes),
            ChatMessage(role="user", content=message),
        ]
        stored = _stored_turn(context.turn_episodes, message, *episode_ids) if keyed else None
        return cls(user, message, context, prompt, episode_ids, stored, embedding)

    def episodes(
        self, reply: str, *, max_bytes: int, interrupted: bool = False
    ) -> list[JsonObject]:
        """The two episodes to append; a reply cut short is marked `interrupted`. The reply is
        made storable (NUL and lone surrogates replaced) and, past `max_bytes` as JSON, cut and
        marked `truncated`, so a paid-for reply is never refused at the last step."""
        reply_episode: JsonObject = {
            "id": self.episode_ids[1],
            "role": "assistant",
            "content": storable_text(reply),
        }
        if interrupted:
            reply_episode["interrupted"] = True
        while encoded_size(reply_episode) > max_bytes and reply_episode["content"]:
            content = reply_episode["content"]
            reply_episode["content"] = content[: len(content) * 3 // 4]
            reply_episode["truncated"] = True
        return [{"id": self.episode_ids[0], "role": "user", "content": self.message}, reply_episode]


def storable_text(text: str) -> str:
    """`text` with what jsonb can not store (NUL, lone surrogates) replaced."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def stored_turn_of(turn: Turn, context: ChatContext) -> TurnResult | None:
    """The turn as `context` holds it (stored by an earlier try with the same key), if so."""
    return _stored_turn(context.turn_episodes, turn.message, *turn.episode_ids)


def _stored_turn(
    episodes: list[JsonObject], message: str, user_id: str, reply_id: str
) -> TurnResult | None:
    """The turn an earlier try with the same key stored; a different message is a conflict."""
    by_id = {e.get("id"): e for e in episodes}
    asked, replied = by_id.get(user_id), by_id.get(reply_id)
    if asked is not None and asked.get("content") != message:
        raise IdempotencyConflict("this Idempotency-Key was used with a different message")
    if asked is None or replied is None:
        return None
    return TurnResult(str(replied.get("content", "")), [asked, replied])
