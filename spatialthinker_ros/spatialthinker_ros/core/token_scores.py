"""What a backend measured of its own generated tokens: log-probabilities under the model.

A backend that can (the transformers backend from the generation's raw logits, the openai
backend from the server's ``logprobs``) hands on, with each output, a :class:`TokenScores`:

* where each generated token's text lies in the output text (characters), so that a place the
  parser found (the answer's option letter, the answer's span) maps to the token written there;
* each token's log-probability under the model;
* for every token whose text holds exactly one ASCII letter and no other letter or digit
  (``B``, `` B``, ``(B``), the log-probability of writing each letter A-Z in its place: the
  same token text with the letter substituted (:func:`letter_variants`). That is what the
  option probabilities of an answer are read from (``core.confidence``).

The tokenizer may put the letter in one token with a parenthesis or a space, so the letters are
compared as whole tokens of the same shape, never as the letter alone. A letter whose variant is
not one token cannot be measured at that place: NaN (the transformers backend knows every token
of its vocabulary). A letter the server did not list among its top alternatives has less
probability than every listed one: ``-inf`` here (counted as 0; a lower bound).

ROS-free and backend-agnostic: backends add tokens to a :class:`TokenScoreBuilder`; the
alignment of the tokens' bytes with the output text is done once, here.
"""

from __future__ import annotations

import bisect
import math
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "LETTERS",
    "MAX_SCORED_TOKENS",
    "TokenScoreBuilder",
    "TokenScores",
    "letter_slot",
    "letter_variants",
]

#: The letters an option can have, in option order (A is option 0).
LETTERS = string.ascii_uppercase
#: Most tokens scored per output (beyond it the output's scores are unavailable): a bound on the
#: memory a runaway or hostile stream of log-probabilities can take.
MAX_SCORED_TOKENS = 65_536
# Longest token text looked at for a letter: an option letter's token is short (" (B" at most a
# few characters); a long one is a word.
_MAX_LETTER_PIECE = 8


def letter_slot(piece: str) -> int | None:
    """Index of the one ASCII letter in a token's text, when it has exactly one and no other
    letter or digit (``"B"``: 0, ``" (B"``: 2, ``"Bo"``: None, ``"é"``: None)."""
    if not piece or len(piece) > _MAX_LETTER_PIECE:
        return None
    found = None
    for index, char in enumerate(piece):
        if char.isalnum():
            if found is not None or not (char.isascii() and char.isalpha()):
                return None
            found = index
    return found


def letter_variants(piece: str, slot: int) -> list[str]:
    """The token text with each letter A-Z in place of its letter (in the case it was written),
    in option order."""
    letters = LETTERS if piece[slot].isupper() else LETTERS.lower()
    return [piece[:slot] + letter + piece[slot + 1 :] for letter in letters]


@dataclass(frozen=True)
class TokenScores:
    """A backend's measurements of one output's tokens (see the module doc).

    Attributes:
        starts: Start of each located token's text in the output text (characters), ascending.
        ends: End (exclusive) of each located token's text.
        tokens: Index of each located token among the generated tokens.
        logprobs: Log-probability (natural log) of every generated token under the model, by
            token index.
        letters: For tokens that hold one letter, by token index: the log-probabilities of
            the 26 letters written in its place (A-Z in the case written; NaN: not one token
            there; ``-inf``: not among the alternatives the server listed).
        reason: Why nothing was measured ("" when something was): the fields are empty then.
    """

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    letters: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def unavailable(cls, reason: str) -> TokenScores:
        """Scores of an output nothing was measured of, and why."""
        return cls(reason=reason)

    def token_at(self, offset: int) -> int | None:
        """Index of the generated token whose text holds character ``offset``, if located."""
        k = bisect.bisect_right(self.starts, offset) - 1
        if k >= 0 and offset < self.ends[k]:
            return self.tokens[k]
        return None

    def tokens_in(self, start: int, end: int) -> list[int]:
        """Indices of the located tokens whose text overlaps characters ``start:end``."""
        k = max(0, bisect.bisect_right(self.starts, start) - 1)
        found = []
        while k < len(self.starts) and self.starts[k] < end:
            if self.ends[k] > start:
                found.append(self.tokens[k])
            k += 1
        return found

    def without(self, text: str, char: str) -> TokenScores:
        """These scores for ``text`` with every ``char`` removed (positions shifted left)."""
        if self.reason or char not in text:
            return self
        removed = [i for i, c in enumerate(text) if c == char]

        def shift(offset: int) -> int:
            return offset - bisect.bisect_left(removed, offset)

        # A token that held only removed characters holds nothing now.
        kept = [
            (shift(s), shift(e), t)
            for s, e, t in zip(self.starts, self.ends, self.tokens, strict=True)
            if shift(e) > shift(s)
        ]
        return TokenScores(
            tuple(s for s, _, _ in kept),
            tuple(e for _, e, _ in kept),
            tuple(t for _, _, t in kept),
            self.logprobs,
            self.letters,
        )


class TokenScoreBuilder:
    """Collects one output's tokens as a backend reads them, then locates them in its text.

    Args:
        max_tokens: Tokens kept at most; with more, :meth:`finish` says the scores are
            unavailable.
    """

    def __init__(self, max_tokens: int = MAX_SCORED_TOKENS) -> None:
        self._max_tokens = max_tokens
        self._pieces: list[bytes] = []
        self._logprobs: list[float] = []
        self._letters: dict[int, tuple[float, ...]] = {}
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._pieces) + self._dropped

    def add(self, piece: bytes, logprob: float, letters: Iterable[float] | None = None) -> None:
        """Add the next generated token.

        Args:
            piece: The token's text as UTF-8 bytes (a token may hold part of a character).
            logprob: Its log-probability under the model.
            letters: For a token with one letter (:func:`letter_slot`), the log-probabilities
                of the 26 letters in its place (see :class:`TokenScores`).
        """
        if len(self._pieces) >= self._max_tokens:
            self._dropped += 1
            return
        if letters is not None:
            self._letters[len(self._pieces)] = tuple(float(v) for v in letters)
        self._pieces.append(piece)
        self._logprobs.append(float(logprob))

    def extend(
        self,
        pieces: Sequence[bytes],
        logprobs: Sequence[float],
        letters: Mapping[int, Iterable[float]] | None = None,
    ) -> None:
        """Add several tokens at once (``letters`` by their index among these; see
        :meth:`add`)."""
        room = max(0, self._max_tokens - len(self._pieces))
        self._dropped += max(0, len(pieces) - room)
        kept = list(pieces[:room])
        base = len(self._pieces)
        for index, values in (letters or {}).items():
            if index < len(kept):
                self._letters[base + index] = tuple(float(v) for v in values)
        self._pieces.extend(kept)
        self._logprobs.extend(float(v) for v in logprobs[: len(kept)])

    def finish(self, text: str) -> TokenScores:
        """The scores with every token located in ``text``, the output text they spell.

        Tokens are matched to the text's UTF-8 bytes from the start, and from the end for the
        rest when a token does not match (a server that writes a partial character as a
        replacement character): what lies after it, the answer, is still located.
        """
        if self._dropped:
            return TokenScores.unavailable(
                f"answer longer than {self._max_tokens} tokens: its tokens were not scored"
            )
        if not self._pieces:
            return TokenScores.unavailable("no token was scored")
        spans = _byte_spans(self._pieces, text.encode("utf-8", "replace"))
        to_char = _char_offsets(text)
        located = [(to_char(s), to_char(e), i) for i, s, e in spans]
        located = [(s, e, i) for s, e, i in located if e > s]
        return TokenScores(
            tuple(s for s, _, _ in located),
            tuple(e for _, e, _ in located),
            tuple(i for _, _, i in located),
            tuple(self._logprobs),
            dict(self._letters),
        )


def _byte_spans(pieces: list[bytes], data: bytes) -> list[tuple[int, int, int]]:
    """``(token index, start, end)`` in ``data`` of every token that could be located."""
    spans = []
    pos = 0
    first_unmatched = len(pieces)
    for index, piece in enumerate(pieces):
        if not data.startswith(piece, pos):
            first_unmatched = index
            break
        spans.append((index, pos, pos + len(piece)))
        pos += len(piece)
    end = len(data)
    tail = []
    for index in range(len(pieces) - 1, first_unmatched - 1, -1):
        piece = pieces[index]
        if end - len(piece) < pos or not data.endswith(piece, 0, end):
            break
        tail.append((index, end - len(piece), end))
        end -= len(piece)
    return spans + tail[::-1]


def _char_offsets(text: str) -> Callable[[int], int]:
    """A function from a UTF-8 byte offset of ``text`` to its character offset."""
    if text.isascii():
        return lambda offset: offset
    starts = []  # byte offset of each character
    at = 0
    for char in text:
        starts.append(at)
        at += len(char.encode("utf-8", "replace"))

    def to_char(offset: int) -> int:
        # A byte inside a character counts as that character's end: a character split over
        # tokens belongs to the token with its first byte.
        return bisect.bisect_left(starts, offset) if offset < at else len(text)

    return to_char


def logsumexp(values: Iterable[float]) -> float:
    """``log(sum(exp(v)))`` of finite or ``-inf`` values, stably (``-inf`` for none)."""
    items = [v for v in values if v > -math.inf]
    if not items:
        return -math.inf
    top = max(items)
    return top + math.log(sum(math.exp(v - top) for v in items))
