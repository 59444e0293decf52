"""The one interface every inference backend implements.

A backend turns a batch of (RGB image, prompt) pairs into texts. It knows nothing about queues,
deadlines, prompts or parsing: the engine owns those. Each row of a batch succeeds or fails on
its own, so one bad request never takes its batch-mates down with it.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from spatialthinker_ros.core.token_scores import TokenScores


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for one backend call.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per request. SpatialThinker answers are
            typically 250 to 500 tokens; 1024 leaves room without letting a runaway answer hold
            the GPU for long.
        temperature: 0 means greedy (the model's published numbers are greedy).
        min_new_tokens: Force at least this many tokens (benchmarks use it to fix the length).
        stream: Pass the text of rows that have a text callback on while it is written (the
            openai backend asks the server for a stream; False: one whole response, for servers
            that cannot stream).
    """

    max_new_tokens: int = 1024
    temperature: float = 0.0
    min_new_tokens: int | None = None
    stream: bool = True


@dataclass(frozen=True)
class BackendOutput:
    """One generated answer.

    Attributes:
        text: The generated text without special tokens.
        prompt_tokens: Tokens in the prompt, image tokens included.
        output_tokens: Generated tokens (end-of-turn token included when it was produced).
        seconds: Wall time of the backend call that produced it (shared by a batch).
        token_scores: The model's log-probabilities of the generated tokens, located in
            ``text`` (None: the backend measures none; see ``core.token_scores``). Not part of
            an output's equality: two outputs of one text are the same answer.
    """

    text: str
    prompt_tokens: int
    output_tokens: int
    seconds: float
    token_scores: TokenScores | None = field(default=None, compare=False)


class BackendError(Exception):
    """A failure of one request (or of loading) inside a backend.

    Attributes:
        reason: Human-readable reason, safe to show to users (never contains secrets).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: One finished row of a batch: its index in the batch and its outcome.
Row = tuple[int, BackendOutput | BackendError]
#: A batch's images: RGB ``HxWx3`` uint8 arrays.
Images = list[np.ndarray]
#: A batch's prompts, one per image.
Prompts = list[str]
#: Per-row events asking a backend to stop that row (or None).
Cancel = Sequence[threading.Event] | None
#: Per-row callbacks taking the text a row's model writes, while it writes it (or None).
OnText = Sequence[Callable[[str], None] | None] | None


@dataclass(frozen=True)
class Batch:
    """One call's rows, as the engine hands them to :meth:`Backend.answers`.

    Attributes:
        images: RGB ``HxWx3`` uint8 arrays, already at the size the prompt states.
        prompts: The user text for each image.
        settings: Decoding settings shared by the batch.
        cancel: Optional per-row events; a set event asks the backend to stop that row.
        on_text: Optional per-row callbacks for the text as it is written (backends that
            stream).
    """

    images: Images
    prompts: Prompts
    settings: GenerationSettings
    cancel: Cancel = None
    on_text: OnText = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.prompts):
            raise ValueError("images and prompts differ in length")


def clean_text(text: str) -> str:
    """Remove NUL characters: ROS strings are C strings, and a NUL cuts everything after it
    (a model answer ``"\\x00(A) left"`` would be published as an empty string)."""
    return text.replace("\x00", "")


def _cleaned(callback: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """A text callback that gets its text without NUL (see :func:`clean_text`)."""
    if callback is None:
        return None
    return lambda text: callback(clean_text(text))


class Backend(ABC):
    """Abstract inference backend.

    Subclasses set ``name`` and implement ``load``, ``unload``, ``loaded`` and ``generate``.
    ``max_concurrency`` tells the engine how many ``generate`` calls may run at once (one GPU
    model: 1; a remote server: its in-flight limit). ``supports_cancel`` says whether a running
    request can be stopped or abandoned through the ``cancel`` events passed to ``generate``.
    ``supports_streaming`` says whether ``generate`` (or ``generate_rows``) takes ``on_text``:
    per-row callbacks called with each piece of text as the model writes it, on the backend's
    thread (they must return at once), before the row's output is returned.
    """

    name: str = "backend"
    max_concurrency: int = 1
    supports_cancel: bool = False
    supports_streaming: bool = False

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Identifier of the model that answers (hub id, directory or served name)."""

    @abstractmethod
    def load(self) -> None:
        """Make the backend ready. Raises BackendError with an actionable reason on failure."""

    @abstractmethod
    def unload(self) -> None:
        """Release the model and its memory. Safe to call when not loaded."""

    @property
    @abstractmethod
    def loaded(self) -> bool:
        """Whether ``generate`` can be called."""

    @abstractmethod
    def generate(
        self, images: Images, prompts: Prompts, settings: GenerationSettings, cancel: Cancel = None
    ) -> list[BackendOutput | BackendError]:
        """Answer a batch.

        Args:
            images: RGB ``HxWx3`` uint8 arrays, already at the size the prompt states.
            prompts: The user text for each image (same length as ``images``).
            settings: Decoding settings shared by the batch.
            cancel: Optional per-row events; a set event asks the backend to stop that row
                early. Backends that cannot stop a row may ignore it.

        Returns:
            One entry per row, in order: the output or the reason that row failed.
        """

    def generate_rows(self, batch: Batch) -> Iterator[Row]:
        """Yield each row of ``batch`` as soon as it is finished, in any order.

        The default runs one ``generate`` call and yields its rows in order (one model batch
        finishes together). Backends whose rows finish independently (one HTTP request per row)
        override this, so a stalled row does not hold back the answers of its batch-mates.
        """
        args = (batch.images, batch.prompts, batch.settings, batch.cancel)
        if batch.on_text is None:
            yield from enumerate(self.generate(*args))
        else:
            yield from enumerate(self.generate(*args, on_text=batch.on_text))

    def redact(self, text: str) -> str:
        """Remove secrets from a failure reason (nothing to remove by default)."""
        return text

    def answers(self, batch: Batch) -> Iterator[Row]:
        """``generate_rows`` through the one gate every outcome leaves a backend by.

        Every reason is redacted and NUL is stripped from every text and reason here, so no
        code path inside a backend (an error built while reading a response, a model's raw
        output) can leak a secret or cut a published string. ``batch.on_text`` reaches backends
        that stream (``supports_streaming``), its text cleaned the same way; others ignore it.
        """
        on_text = batch.on_text
        if on_text is not None and self.supports_streaming and any(on_text):
            on_text = [_cleaned(callback) for callback in on_text]
        else:
            on_text = None
        rows = self.generate_rows(dataclasses.replace(batch, on_text=on_text))
        for index, output in rows:
            if isinstance(output, BackendError):
                yield index, BackendError(clean_text(self.redact(output.reason)))
            else:
                # The token scores locate tokens in the text: they follow it.
                scores = output.token_scores
                if scores is not None:
                    scores = scores.without(output.text, "\x00")
                text = clean_text(output.text)
                yield index, dataclasses.replace(output, text=text, token_scores=scores)

    @property
    def state(self) -> str:
        """Short state for diagnostics ("loaded", "not loaded", ...): what a backend has set as
        ``_state``, else whether it is loaded."""
        state = getattr(self, "_state", None)
        if state is not None:
            return state
        return "loaded" if self.loaded else "not loaded"

    def describe(self) -> dict[str, object]:
        """Diagnostics for the engine's statistics (no secrets)."""
        return {"backend": self.name, "model": self.model_name, "state": self.state}
