"""The lenient JSON reader for ``<scene>`` text that :func:`json.loads` refuses.

Real generations write Python dicts and tuples, single quotes, trailing commas, unquoted words,
code fences, stray text, and scenes cut off by the token limit. :func:`_read_scene_tolerant`
reads all of these with an iterative tokenizer and a stack (no recursion, nothing is ever
``eval``-ed), in linear time and within :data:`MAX_SCENE_CHARS`, keeping what is complete;
:func:`_strip_fences` removes a Markdown code fence first.
"""

from __future__ import annotations

import re
from typing import Any

from spatialthinker_ros.core.parsing.notes import _excerpt, _Notes

#: The tolerant scene reader looks at no more than this; a real scene of 100 objects and 100
#: relations is ~15k characters.
MAX_SCENE_CHARS = 100_000
#: Deeper nesting than this never occurs in a scene graph; deeper content is skipped.
_MAX_DEPTH = 16


class _Dict(dict):
    """A dict from the tolerant reader that remembers whether its ``}`` was seen."""

    __slots__ = ("complete",)


class _List(list):
    """A list from the tolerant reader that remembers whether its closing bracket was seen."""

    __slots__ = ("closer", "complete")


# One token per match: punctuation, a double- or single-quoted string (the closing quote is
# optional so a string cut off by the token limit is still one token), or a bare word. Each
# alternative starts with a different character class and the string bodies are the unrolled
# form ``[^"\\]*(?:\\.[^"\\]*)*``, so matching is linear with no backtracking.
_TOKEN = re.compile(
    r"""[{}\[\]():,]"""
    r"""|"[^"\\]*(?:\\.[^"\\]*)*"?"""
    r"""|'[^'\\]*(?:\\.[^'\\]*)*'?"""
    r"""|[^\s{}\[\]():,"']+""",
    re.DOTALL,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
_LITERALS = {"true": True, "false": False, "null": None}
_PY_LITERALS = {"True": True, "False": False, "None": None}


def _unescape(match: re.Match[str]) -> str:
    esc = match.group(1)
    if len(esc) == 5:
        return chr(int(esc[1:], 16))
    return _SIMPLE_ESCAPES.get(esc, esc)


def _string_token(tok: str) -> tuple[str, bool]:
    """Body of a quoted token and whether it was terminated."""
    quote = tok[0]
    closed = len(tok) >= 2 and tok.endswith(quote) and not _ends_escaped(tok)
    body = tok[1:-1] if closed else tok[1:]
    return (_ESCAPE.sub(_unescape, body) if "\\" in body else body), closed


def _ends_escaped(tok: str) -> bool:
    # The final quote is escaped when preceded by an odd run of backslashes.
    run = len(tok) - 1 - len(tok[:-1].rstrip("\\"))
    return run % 2 == 1


class _TolerantReader:
    """The stack of open containers while the tokens of a scene are read, one at a time."""

    __slots__ = ("colon", "keys", "notes", "root", "stack", "stray")

    def __init__(self, notes: _Notes) -> None:
        self.notes = notes
        self.root: Any = None
        self.stack: list[Any] = []  # open containers
        self.keys: list[Any] = []  # per open container: pending dict key (None when expecting one)
        self.colon: list[bool] = []  # per open container: a ':' followed the pending key
        self.stray = False

    def attach(self, value: Any) -> None:
        """Put ``value`` into the innermost open container (as a key, a value or an item)."""
        if not self.stack:
            self.stray = True
            return
        top = self.stack[-1]
        if isinstance(top, list):
            top.append(value)
        elif self.keys[-1] is None:
            if isinstance(value, str):
                self.keys[-1] = value
            else:
                self.stray = True  # a container or number where a key belongs: drop it
        else:
            if not self.colon[-1]:
                self.notes.add("missing ':' between a key and its value")
            top[self.keys[-1]] = value
            self.keys[-1] = None
            self.colon[-1] = False

    def open(self, c: str) -> bool:
        """Open a container at ``{``, ``[`` or ``(``; False when it is too deep to read."""
        if len(self.stack) >= _MAX_DEPTH:
            self.notes.add(f"scene nested deeper than {_MAX_DEPTH} levels; inner part ignored")
            return False
        if c == "(":
            self.notes.add("Python tuple in <scene> read as a list")
        container: Any = _Dict() if c == "{" else _List()
        container.complete = False
        if isinstance(container, _List):
            container.closer = "]" if c == "[" else ")"
        if self.stack:
            self.attach(container)
        elif self.root is None:
            self.root = container
        else:
            self.stray = True
        self.stack.append(container)
        self.keys.append(None)
        self.colon.append(False)
        return True

    def close(self, c: str, after_comma: bool) -> bool:
        """Close the innermost container that ``c`` closes; True once the root is closed."""
        stack = self.stack
        want = _Dict if c == "}" else _List
        idx = len(stack) - 1
        while idx >= 0 and not (
            isinstance(stack[idx], want) and (c == "}" or stack[idx].closer == c)
        ):
            idx -= 1
        if idx < 0:
            self.stray = True
            return False
        if after_comma:
            self.notes.add("trailing comma in <scene>")
        if idx != len(stack) - 1:
            self.notes.add(f"mismatched {c!r} in <scene>; inner containers left incomplete")
        stack[idx].complete = True
        del stack[idx:], self.keys[idx:], self.colon[idx:]
        return not stack and self.root is not None

    def separator(self, c: str) -> None:
        """Note a ``:`` after a pending key, or drop a key that a ``,`` leaves without a value."""
        if self.stack and isinstance(self.stack[-1], dict) and self.keys[-1] is not None:
            if c == ":":
                self.colon[-1] = True
            else:
                self.keys[-1] = None  # a key without a value: drop it
                self.colon[-1] = False

    def string(self, tok: str) -> bool:
        """Read a quoted token; False when it was cut off (its container stays incomplete)."""
        value, closed = _string_token(tok)
        if tok[0] == "'":
            self.notes.add("single-quoted strings in <scene>")
        if not closed:
            # Only the token limit cuts a string.
            return False
        self.attach(value)
        return True

    def word(self, tok: str) -> None:
        """Read a bare word: a literal, a number, or an unquoted key or value."""
        if tok in _LITERALS:
            self.attach(_LITERALS[tok])
        elif tok in _PY_LITERALS:
            self.notes.add(f"Python literal {tok} in <scene>")
            self.attach(_PY_LITERALS[tok])
        elif _NUMBER.fullmatch(tok):
            # Long digit runs go through float (-> inf, rejected later): int() refuses
            # more than 4,300 digits.
            is_float = len(tok) > 300 or any(ch in tok for ch in ".eE")
            self.attach(float(tok) if is_float else int(tok))
        elif self.stack:
            if isinstance(self.stack[-1], dict) and self.keys[-1] is None:
                self.notes.add(f"unquoted key {_excerpt(tok)} in <scene>")
            else:
                self.notes.add(f"unquoted value {_excerpt(tok)} in <scene>")
            self.attach(tok)
        else:
            self.stray = True

    def finish(self) -> Any:
        """Report what was left open or stray; the first top-level value, or None."""
        if self.stack:
            self.notes.add(
                "scene cut off before its end (truncated output?); incomplete entries dropped"
            )
        if self.stray:
            self.notes.add("stray text in <scene> ignored")
        return self.root


def _read_scene_tolerant(scene: str, notes: _Notes) -> Any:
    """Parse JSON-ish text without recursion or eval, keeping what is complete.

    Accepts single quotes, Python literals and tuples, trailing commas, unquoted words, stray
    text around the value, and input cut off anywhere (open containers are returned with
    ``complete=False``). Returns the first top-level ``{...}`` or ``[...]`` value, or ``None``.
    """
    if len(scene) > MAX_SCENE_CHARS:
        notes.add(f"scene longer than {MAX_SCENE_CHARS} characters; the rest ignored")
        scene = scene[:MAX_SCENE_CHARS]
    reader = _TolerantReader(notes)
    # Bound once: this loop runs once per token of up to MAX_SCENE_CHARS characters.
    open_, close, separator, string, word = (
        reader.open,
        reader.close,
        reader.separator,
        reader.string,
        reader.word,
    )
    skip = 0  # depth of containers skipped because nesting exceeded _MAX_DEPTH
    prev = ""  # first character of the previous token read
    for m in _TOKEN.finditer(scene):
        tok = m.group()
        c = tok[0]
        # A token skipped, or a string cut off, does not count as the previous token.
        if skip:
            if c in "{[(":
                skip += 1
            elif c in "}])":
                skip -= 1
            continue
        if c in "{[(":
            if not open_(c):
                skip = 1
                continue
        elif c in "}])":
            if close(c, prev == ","):
                break  # the first top-level value is the scene
        elif c in ":,":
            separator(c)
        elif c in "\"'":
            if not string(tok):
                continue
        else:
            word(tok)
        prev = c
    return reader.finish()


def _strip_fences(scene: str, notes: _Notes) -> str:
    """Remove a Markdown code fence (```json ... ```) around the scene."""
    s = scene.strip()
    if not s.startswith("```") and not s.endswith("```"):
        return scene
    notes.add("code fence inside <scene> removed")
    if s.startswith("```"):
        newline = s.find("\n")
        s = s[newline + 1 :] if newline >= 0 else s[3:].lstrip("`")
        # ```json{...} on one line: drop the language word.
        if newline < 0:
            brace = min((p for p in (s.find("{"), s.find("[")) if p >= 0), default=0)
            s = s[brace:]
    if s.rstrip().endswith("```"):
        s = s.rstrip()[:-3]
    return s
