"""Parent report prompts and stored items (services/guardians/report.py): pure functions."""

from __future__ import annotations

from models import ReportContext
from services.guardians.report import new_rewards, report_item, report_messages

EPISODES = [
    {"id": "e1", "role": "user", "content": "I got a star!", "created_at": "2026-12-03T10:00:00Z"},
    {
        "id": "e2",
        "role": "assistant",
        "content": "Well done!",
        "created_at": "2026-12-03T10:00:01Z",
    },
]


def context(**overrides: object) -> ReportContext:
    data: dict[str, object] = {"episodes": EPISODES, "rewards": [], **overrides}
    return ReportContext.model_validate(data)


def test_rewards_since_the_last_report_only() -> None:
    rewards = [
        {"id": "old", "badge": "reader", "created_at": "2026-12-01T09:00:00+00:00"},
        {"id": "new", "badge": "star", "created_at": "2026-12-03T10:00:00+00:00"},
        {"id": "odd", "badge": "kind", "created_at": "yesterday"},  # unreadable: kept
    ]
    since = context(rewards=rewards, last_report_at="2026-12-02T00:00:00+00:00")
    assert [r["id"] for r in new_rewards(since)] == ["new", "odd"]
    assert [r["id"] for r in new_rewards(context(rewards=rewards))] == ["old", "new", "odd"]


def test_the_prompt_names_the_headings_and_carries_the_conversation() -> None:
    rewards = [{"id": "r", "badge": "star", "created_at": "2026-12-03T10:00:00+00:00"}]
    system, user = report_messages(context(rewards=rewards))
    for heading in ("Topics", "Mood", "Anything worrying", "Rewards earned"):
        assert heading in system["content"]
    assert "user: I got a star!\nassistant: Well done!" in user["content"]
    assert "badge: star" in user["content"]


def test_the_item_records_its_range_and_fits_the_item_size() -> None:
    item = report_item(context(), "  Topics: stars.  ", max_bytes=4096)
    assert item["report"] == "Topics: stars."
    assert (item["from_episode_id"], item["through_episode_id"]) == ("e1", "e2")
    assert (item["from"], item["through"], item["episode_count"]) == (
        "2026-12-03T10:00:00Z",
        "2026-12-03T10:00:01Z",
        2,
    )
    long = report_item(context(), "word " * 5000 + "\x00", max_bytes=4096)
    assert long["truncated"] is True and len(long["report"].encode()) < 4096
