"""Split an output into its four tagged sections, in document order.

:func:`_split_sections` finds ``<observe>``, ``<scene>``, ``<think>`` and ``<answer>`` the way
:func:`~spatialthinker_ros.core.parsing.parse_output` reads them (missing, repeated, misnested
and upper-case tags included); :func:`section_progress` applies the same rules to an output still
being written.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from spatialthinker_ros.core.parsing.notes import _excerpt, _Notes

#: The four sections, in the order the model is trained to write them.
TAGS = ("observe", "scene", "think", "answer")

# Lower-case ASCII only: str.lower() may change the length of non-ASCII text, and positions
# found in the lowered copy must index the original.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass
class _Section:
    content: str | None = None  # None: the section is missing
    start: int = -1  # position of the opening tag (or of the content when it is missing)
    end: int = -1  # position just after the closing tag (or the content)
    complete: bool = True  # both its opening and its closing tag were found
    body: int = -1  # position of the content's first character (after the opening tag)


@dataclass
class _Sections:
    """The sections used, one per tag, and where the tagged part of the output ends."""

    used: dict[str, _Section]
    tail: int  # position just after the last section: the text after it is not in any section


@dataclass
class _Tags:
    """Every tag of an output, each located once."""

    tokens: list[tuple[int, bool, str]]  # (position, is_closing, tag), in document order
    at: list[int]  # the tokens' positions
    opening: dict[str, list[int]]  # per tag, the positions of its opening tags
    closing: dict[str, list[int]]  # per tag, the positions of its closing tags


def _positions(low: str, marker: str) -> list[int]:
    found: list[int] = []
    at = low.find(marker)
    while at >= 0:
        found.append(at)
        at = low.find(marker, at + len(marker))
    return found


def _locate_tags(low: str) -> _Tags:
    """Every opening and closing tag in ``low`` (the output in ASCII lower case)."""
    tokens: list[tuple[int, bool, str]] = []
    opening: dict[str, list[int]] = {}
    closing: dict[str, list[int]] = {}
    for tag in TAGS:
        opening[tag] = _positions(low, f"<{tag}>")
        tokens.extend((p, False, tag) for p in opening[tag])
        closing[tag] = _positions(low, f"</{tag}>")
        tokens.extend((p, True, tag) for p in closing[tag])
    tokens.sort()
    return _Tags(tokens, [p for p, _, _ in tokens], opening, closing)


def _check_case(text: str, at: int, mark: str, notes: _Notes) -> None:
    if text[at : at + len(mark)] != mark:
        notes.add(f"tag {mark} written in upper case", breaks_format=True)


def _split_sections(text: str, notes: _Notes) -> _Sections:
    """Find the sections in document order.

    A tag that falls inside an open section is text of that section (the reasoning may well
    say "I will put the letter in the <answer> section"), not a section of its own. A section
    whose own opening tag comes again before it closes was started over and ends there; one
    whose closing tag never comes runs to the next tag, or to the end of the output when
    generation was cut off. Of several sections of one tag the first is used, except for
    ``<answer>``, where the last complete one is (the model's final word; the authors'
    evaluation reads the last answer block too).

    Linear time: every tag is located once with ``str.find``; closing tags are looked up by
    bisection, and the document-order walk skips each tag at most once.
    """
    found = _read_in_document_order(text, _locate_tags(text.translate(_ASCII_LOWER)), notes)
    used = {tag: _pick_section(tag, found[tag], notes) for tag in TAGS}
    _check_layout(text, used, notes)
    tail = max((sec.end for secs in found.values() for sec in secs), default=0)
    return _Sections(used, tail)


def _read_in_document_order(text: str, tags: _Tags, notes: _Notes) -> dict[str, list[_Section]]:
    """Every section of each tag, walking the tags in document order."""
    found: dict[str, list[_Section]] = {tag: [] for tag in TAGS}
    pos = 0  # everything before this is read
    host = ""  # the section that the tags before ``pos`` fell into
    own_close = -1  # position of that section's own closing tag
    for at, is_closing, tag in tags.tokens:
        if at == own_close:
            continue
        if at < pos:
            _note_tag_inside(text, at, is_closing, tag, host, notes)
            continue
        if is_closing:
            mark = f"</{tag}>"
            if found[tag]:
                notes.add(f"stray {mark} ignored")
            else:
                # Missing opening tag: the section starts where the previous one ended.
                notes.add(f"missing opening tag <{tag}>", breaks_format=True)
                _check_case(text, at, mark, notes)
                found[tag].append(
                    _Section(text[pos:at], pos, at + len(mark), complete=False, body=pos)
                )
            pos, host = at + len(mark), tag
            continue
        section = _read_opened_section(text, at, tag, tags, notes)
        found[tag].append(section)
        pos, host = section.end, tag
        if section.complete:
            own_close = section.end - len(tag) - 3  # where its "</tag>" starts
    return found


def _note_tag_inside(
    text: str, at: int, is_closing: bool, tag: str, host: str, notes: _Notes
) -> None:
    """Report a tag that falls inside the section ``host`` just read: it is that section's text."""
    mark = f"</{tag}>" if is_closing else f"<{tag}>"
    # The training format counts every opening tag written, so a mention of one still breaks it.
    exact = not is_closing and text[at : at + len(mark)] == mark
    notes.add(f"tag {mark} inside <{host}> read as its text, not as a section", breaks_format=exact)


def _read_opened_section(text: str, at: int, tag: str, tags: _Tags, notes: _Notes) -> _Section:
    """The section that the opening tag at ``at`` starts, up to where it ends."""
    mark = f"<{tag}>"
    _check_case(text, at, mark, notes)
    body = at + len(mark)
    closes = tags.closing[tag]
    k = bisect.bisect_left(closes, body)
    opens = tags.opening[tag]
    j = bisect.bisect_left(opens, body)
    reopened = opens[j] if j < len(opens) else len(text)
    if k < len(closes) and closes[k] > reopened:
        # The same tag opens again before this one closes: the model started the section
        # over (a section never names its own opening tag in the trained format).
        notes.add(f"missing closing tag </{tag}>; read up to the next <{tag}>", breaks_format=True)
        return _Section(text[body:reopened], at, reopened, complete=False, body=body)
    if k < len(closes):
        close = closes[k]
        _check_case(text, close, f"</{tag}>", notes)
        return _Section(text[body:close], at, close + len(tag) + 3, body=body)
    # Missing closing tag: the section runs to the next tag of any kind, or to the end
    # of the text when generation was cut off by the token limit.
    k = bisect.bisect_left(tags.at, body)
    end = tags.at[k] if k < len(tags.at) else len(text)
    where = "next tag" if k < len(tags.at) else "end of output (cut off?)"
    notes.add(f"missing closing tag </{tag}>; read up to the {where}", breaks_format=True)
    return _Section(text[body:end], at, end, complete=False, body=body)


def _pick_section(tag: str, sections: list[_Section], notes: _Notes) -> _Section:
    """The one section of ``tag`` used: the first, or for ``<answer>`` the last complete one."""
    if not sections:
        return _Section()
    if len(sections) == 1:
        return sections[0]
    if tag != "answer":
        notes.add(f"tag <{tag}> appears {len(sections)} times; using the first", breaks_format=True)
        return sections[0]
    complete = [i for i, sec in enumerate(sections) if sec.complete]
    index = complete[-1] if complete else len(sections) - 1
    notes.add(
        f"tag <answer> appears {len(sections)} times; using block {index + 1} of "
        f"{len(sections)}: {_excerpt((sections[index].content or '').strip())}",
        breaks_format=True,
    )
    return sections[index]


def _check_layout(text: str, used: dict[str, _Section], notes: _Notes) -> None:
    """Report sections out of the trained order, and text before the first one."""
    present = sorted((sec.start, tag) for tag, sec in used.items() if sec.content is not None)
    if [tag for _, tag in present] != [tag for tag in TAGS if used[tag].content is not None]:
        # The training reward did not enforce order, so this does not break the format.
        notes.add("tags out of order (expected observe, scene, think, answer)")
    if present:
        first = present[0][0]
        if text[:first].strip():
            notes.add(f"text before the first tag ignored: {_excerpt(text[:first].strip())}")


def section_progress(text: str) -> tuple[str | None, int | None]:
    """Where an output still being written stands, by the rules :func:`parse_output` reads it.

    Returns:
        The tag of the section written last (the last one started, in document order; None
        before the first tag), and, once the ``<scene>`` that :func:`parse_output` would use is
        closed, the position just after its ``</scene>`` (else None). The text up to that
        position holds the whole scene graph: parsing it gives the final parse's scene.
    """
    split = _split_sections(text, _Notes())
    started = [(sec.start, tag) for tag, sec in split.used.items() if sec.content is not None]
    current = max(started)[1] if started else None
    scene = split.used["scene"]
    closed = scene.content is not None and scene.complete
    return current, (scene.end if closed else None)
