"""The warnings a parse collects, and the strict flag that goes with them.

Every reader in this package reports what it found wrong or repaired through one :class:`_Notes`;
the helpers here shorten untrusted text for those warnings and cap over-long fields.
"""

from __future__ import annotations

from typing import Any

MAX_WARNINGS = 64

_EXCERPT = 40


class _Notes:
    """Collects warnings, deduplicated and capped, and the strict flag."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._seen: set[str] = set()
        self._dropped = 0
        self.strict = True

    def add(self, message: str, *, breaks_format: bool = False) -> None:
        if breaks_format:
            self.strict = False
        if message in self._seen:
            return
        if len(self.items) >= MAX_WARNINGS:
            self._dropped += 1
            return
        self._seen.add(message)
        self.items.append(message)

    def finish(self) -> list[str]:
        if self._dropped:
            self.items.append(f"{self._dropped} further warnings suppressed")
        return self.items


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text[: _EXCERPT * 2]  # bound repr work before formatting
    short = text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."
    return repr(short) if isinstance(value, str) else short


def _cap(text: str, limit: int, what: str, notes: _Notes) -> str:
    if len(text) > limit:
        notes.add(f"{what} longer than {limit} characters; truncated")
        return text[:limit]
    return text
