"""A parent report's prompt and stored item: pure functions, no I/O (the guardian service
does the calls)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models import JsonObject, ReportContext
from services.chat.llm import ChatMessage
from services.chat.turn import is_episode, render_items, storable_text
from services.memory_service import encoded_size

REPORT_INSTRUCTIONS = (
    "You write short reports for a parent about their child's conversations with an AI "
    "companion. Using only the conversation and rewards below, write a plain-text report with "
    "these four headings: Topics, Mood, Anything worrying (write 'Nothing' when there is "
    "nothing), Rewards earned. Be factual, brief and kind; never invent anything."
)
REPORT_LINE_CHARS = 1000  # per episode in the prompt, so a report's prompt stays within context


def _line(episode: JsonObject) -> str:
    if is_episode(episode):
        text = f"{episode['role']}: {episode['content']}"
    else:
        text = "note: " + render_items([episode]).removeprefix("- ")
    return text if len(text) <= REPORT_LINE_CHARS else text[: REPORT_LINE_CHARS - 1] + "…"


def _parsed(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def new_rewards(context: ReportContext) -> list[JsonObject]:
    """The rewards earned since the newest report (all of the newest ones without one)."""
    since = _parsed(context.last_report_at)
    if since is None:
        return context.rewards
    fresh = []
    for reward in context.rewards:
        earned = _parsed(reward.get("created_at"))
        if earned is None or earned.tzinfo is None or earned > since:
            fresh.append(reward)
    return fresh


def report_messages(context: ReportContext) -> list[ChatMessage]:
    """The prompt asking the LLM for a report on `context.episodes` (oldest first)."""
    conversation = "\n".join(_line(e) for e in context.episodes)
    rewards = render_items(new_rewards(context)) or "(none)"
    return [
        ChatMessage(role="system", content=REPORT_INSTRUCTIONS),
        ChatMessage(
            role="user",
            content=f"Conversation (oldest first):\n{conversation}\n\nRewards earned:\n{rewards}",
        ),
    ]


def report_item(context: ReportContext, text: str, *, max_bytes: int) -> JsonObject:
    """The report as stored in parent_reports, with the range of episodes it covers; text past
    `max_bytes` is cut and marked `truncated` (a paid-for report is never refused)."""
    first, last = context.episodes[0], context.episodes[-1]
    item: JsonObject = {
        "kind": "report",
        "report": storable_text(text.strip()),
        "from_episode_id": first.get("id"),
        "through_episode_id": last.get("id"),
        "episode_count": len(context.episodes),
        "from": first.get("created_at"),
        "through": last.get("created_at"),
    }
    while encoded_size(item) > max_bytes and item["report"]:
        item["report"] = item["report"][: len(item["report"]) * 3 // 4]
        item["truncated"] = True
    return item
