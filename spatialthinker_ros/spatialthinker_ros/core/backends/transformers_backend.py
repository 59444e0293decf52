"""The embedded backend: Qwen2.5-VL (SpatialThinker) through Hugging Face transformers.

One model in this process, one ``generate`` at a time (``max_concurrency = 1``); throughput
comes from batching several pending requests into one left-padded ``generate`` call.

Rows with a text callback stream: a streamer on the ``generate`` call splits each step's new
tokens per row and passes each row's new text on as it is decoded.

Every output carries the model's probabilities of its own tokens (``BackendOutput.token_scores``:
what an answer's option probabilities are read from), taken from the same ``generate`` call's raw
logits (``output_logits``: before repetition penalty, temperature or any other processor), batched
and streamed rows alike; no second forward pass.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spatialthinker_ros.core.backends.base import (
    Backend,
    BackendError,
    BackendOutput,
    Cancel,
    GenerationSettings,
    Images,
    OnText,
    Prompts,
)
from spatialthinker_ros.core.token_scores import (
    TokenScoreBuilder,
    TokenScores,
    letter_slot,
    letter_variants,
)

DEFAULT_MODEL = "OX-PIXL/SpatialThinker-7B"

_LOG = logging.getLogger(__name__)

_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def _default_pixels() -> tuple[int, int]:
    # The protocol layer owns these numbers; fall back to the same values while it is absent
    # so this module stays importable on its own.
    try:
        from spatialthinker_ros.core.model_frame import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
    except ImportError:  # pragma: no cover - only before model_frame exists
        return 512 * 512, 1280 * 28 * 28
    return DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS


class _CancelRows:
    """Stopping criterion that ends the rows whose cancel event is set.

    transformers accepts a per-row boolean from a stopping criterion and pads finished rows,
    so a cancelled request stops costing decode steps without disturbing its batch-mates.
    """

    def __init__(self, events: Sequence[threading.Event]) -> None:
        self._events = list(events)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        flags = [event.is_set() for event in self._events]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


class _RowStreamer:
    """A ``generate`` streamer that passes each row's new text to that row's callback.

    transformers' own text streamers take one row; a batch's ``put`` gets one token per row
    each step (after the prompt, which is skipped). A row ends at its first end-of-turn token
    (what follows is padding). Text is held back while it ends in an incomplete character, and
    each row's tokens are decoded again only up to the last newline, so a step costs a short
    decode however long the answer is.
    """

    def __init__(self, tokenizer: Any, callbacks: OnText, eos_ids: set[int], pad_id: int) -> None:
        self._tokenizer = tokenizer
        self._callbacks = list(callbacks or [])
        self._stop_ids = eos_ids | {pad_id}
        self._tokens: list[list[int]] = [[] for _ in self._callbacks]
        self._sent = [0] * len(self._callbacks)  # characters of the pending tokens passed on
        self._done = [callback is None for callback in self._callbacks]
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        step = value.reshape(len(self._callbacks), -1)[:, -1].tolist()
        for row, token in enumerate(step):
            if self._done[row]:
                continue
            if token in self._stop_ids:
                self._done[row] = True
                continue
            self._tokens[row].append(int(token))
            text = self._tokenizer.decode(self._tokens[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # a character whose bytes are not all written yet
            new, self._sent[row] = text[self._sent[row] :], len(text)
            if text.endswith("\n"):
                self._tokens[row], self._sent[row] = [], 0
            if new:
                self._callbacks[row](new)

    def end(self) -> None:
        """Nothing to flush: a row's text is passed on as soon as it decodes."""


def _row_length(row: list[int], eos_ids: set[int], pad_id: int) -> int:
    """Generated tokens of a row: up to and including its first end-of-turn token; what follows
    is padding of a row that finished before the longest one in the batch."""
    count = len(row)
    for i, tok in enumerate(row):
        if tok in eos_ids:
            count = i + 1
            break
    while count > 0 and row[count - 1] == pad_id and row[count - 1] not in eos_ids:
        count -= 1
    return count


def _token_pieces(tokenizer: Any, ids: list[int], cache: dict[int, str]) -> list[str]:
    """Each token's text, in order, such that they join to the decoded text: a token holding
    only part of a character gets "" and the token that completes it the whole character.
    Whole tokens' texts are looked up in ``cache`` (one decode per token id, ever)."""
    pieces: list[str] = []
    pending: list[int] = []
    for token in ids:
        if not pending:
            piece = cache.get(token)
            if piece is None:
                piece = cache[token] = tokenizer.decode([token], skip_special_tokens=True)
            if not piece.endswith("\ufffd"):
                pieces.append(piece)
                continue
        pending.append(token)
        text = tokenizer.decode(pending, skip_special_tokens=True)
        # A character is at most 4 bytes: a token ending in U+FFFD after that wrote it itself.
        if text.endswith("\ufffd") and len(pending) < 4:
            pieces.append("")
            continue
        pieces.append(text)
        pending = []
    return pieces


class _TokenScorer:
    """The token scores of a ``generate`` call's rows, from its raw logits (see
    :mod:`spatialthinker_ros.core.token_scores`).

    For each generated token: its log-probability (log-softmax of the step's raw logits); for a
    token holding one letter (``B``, `` B``, ``(B``), the log-probabilities of its 26 letter
    variants: the vocabulary entry with the letter substituted, where that is one token (else
    NaN). Which tokens hold a letter, and their variants' ids, are looked up once per token id.
    """

    # Steps whose logits are stacked at once: bounds the extra memory of the reduction.
    _BLOCK = 64

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._variants: dict[int, list[int] | None] = {}
        self._pieces: dict[int, str] = {}

    def variants(self, token_id: int) -> list[int] | None:
        """Ids of the 26 letter variants of a token holding one letter (-1: not one token);
        None for any other token."""
        if token_id in self._variants:
            return self._variants[token_id]
        tok = self._tokenizer
        found = None
        slot = letter_slot(tok.decode([token_id], skip_special_tokens=True))
        name = tok.convert_ids_to_tokens(token_id)
        # The vocabulary entry's own spelling ("Ġ(B" for " (B"): its one ASCII letter is swapped.
        letters = [i for i, c in enumerate(name or "") if c.isascii() and c.isalpha()]
        if slot is not None and len(letters) == 1:
            found = [self._id(variant) for variant in letter_variants(name, letters[0])]
        self._variants[token_id] = found
        return found

    def _id(self, name: str) -> int:
        token_id = self._tokenizer.convert_tokens_to_ids(name)
        if not isinstance(token_id, int) or token_id < 0:
            return -1
        return token_id if self._tokenizer.convert_ids_to_tokens(token_id) == name else -1

    def scores(
        self,
        logits: Sequence[Any],
        new_tokens: Any,
        counts: list[int],
        texts: list[str],
    ) -> list[TokenScores]:
        """One :class:`TokenScores` per row (``logits``: one ``[rows, vocab]`` per step)."""
        import torch

        rows = new_tokens.cpu().tolist()
        if not logits:
            return [TokenScores.unavailable("no token was generated") for _ in rows]
        lse_parts, chosen_parts = [], []
        for lo in range(0, len(logits), self._BLOCK):
            block = torch.stack(list(logits[lo : lo + self._BLOCK]), dim=1).float()
            lse = torch.logsumexp(block, dim=-1)
            ids = new_tokens[:, lo : lo + block.shape[1]].unsqueeze(-1)
            chosen_parts.append(block.gather(-1, ids).squeeze(-1) - lse)
            lse_parts.append(lse)
        lse = torch.cat(lse_parts, dim=1)
        chosen = torch.cat(chosen_parts, dim=1).cpu().tolist()
        letters = self._letter_logprobs(logits, lse, rows, counts)
        results = []
        for r, (row, count, text) in enumerate(zip(rows, counts, texts, strict=True)):
            builder = TokenScoreBuilder()
            pieces = _token_pieces(self._tokenizer, row[:count], self._pieces)
            builder.extend(
                [piece.encode("utf-8") for piece in pieces],
                chosen[r][:count],
                {step: values for (row_, step), values in letters.items() if row_ == r},
            )
            results.append(builder.finish(text))
        return results

    def _letter_logprobs(
        self, logits: Sequence[Any], lse: Any, rows: list[list[int]], counts: list[int]
    ) -> dict[tuple[int, int], list[float]]:
        """The letter variants' log-probabilities of every letter token, by (row, step)."""
        import torch

        vocab = int(logits[0].shape[-1])
        places = []
        for r, (row, count) in enumerate(zip(rows, counts, strict=True)):
            for step in range(count):
                variants = self.variants(row[step])
                if variants is not None:
                    places.append((r, step, [v if v < vocab else -1 for v in variants]))
        if not places:
            return {}
        device = lse.device
        picked = torch.stack([logits[step][r] for r, step, _ in places]).float()
        ids = torch.tensor([[max(v, 0) for v in vs] for _, _, vs in places], device=device)
        where = torch.tensor([[r, step] for r, step, _ in places], device=device)
        values = (picked.gather(-1, ids) - lse[where[:, 0], where[:, 1]].unsqueeze(-1)).cpu()
        return {
            (r, step): [math.nan if v < 0 else x for v, x in zip(vs, row, strict=True)]
            for (r, step, vs), row in zip(places, values.tolist(), strict=True)
        }


class TransformersBackend(Backend):
    """Qwen2_5_VLForConditionalGeneration + AutoProcessor in this process.

    Args:
        model: Hub id or local directory.
        device: "auto" (first CUDA device, else CPU), "cuda", "cuda:N" or "cpu".
        dtype: "auto" (bf16 on CUDA, float32 on CPU) or a dtype name.
        attn_implementation: "auto" (FlashAttention-2 when installed and usable, else sdpa),
            or any value transformers accepts ("sdpa", "eager", "flash_attention_2").
        min_pixels: Processor minimum image area; must match the engine's model frame planning
            so the processor's own resize is a no-op on the images we send.
        max_pixels: Processor maximum image area (same reason).
        logits_processor: Extra logits processors added to every ``generate`` call (tests use
            one to force a known output through the real generate path).
        revision: Optional hub revision.
        local_files_only: Never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        progress: Called with human-readable loading progress lines (default: logging).
        score_tokens: Measure the model's probabilities of its generated tokens from the
            generation's raw logits (each output's ``token_scores``: the answers' option
            probabilities). It keeps every step's logits until the call ends (steps x rows x
            vocabulary floats, 0.6 MB a token and row for the 7B); False: measure nothing.
    """

    name = "transformers"
    max_concurrency = 1
    supports_cancel = True
    supports_streaming = True

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str = "auto",
        attn_implementation: str = "auto",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        logits_processor: Sequence[Any] | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        progress: Callable[[str], None] | None = None,
        score_tokens: bool = True,
    ) -> None:
        default_min, default_max = _default_pixels()
        self._model_id = str(model)
        self._device_setting = device
        self._dtype_setting = dtype
        self._attn_setting = attn_implementation
        self.min_pixels = int(min_pixels if min_pixels is not None else default_min)
        self.max_pixels = int(max_pixels if max_pixels is not None else default_max)
        self.logits_processor = list(logits_processor or [])
        self._revision = revision
        self._local_files_only = local_files_only
        self._progress = progress or (lambda line: _LOG.info("%s", line))
        self.score_tokens = bool(score_tokens)
        self._scorer: Any = None
        self._state = "not loaded"
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._device: str | None = None
        self._dtype_name: str | None = None
        self._attn: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def model_name(self) -> str:
        return self._model_id

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str | None:
        """Resolved device once loaded."""
        return self._device

    @property
    def processor(self) -> Any:
        """The loaded processor (None before ``load``)."""
        return self._processor

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(
            device=self._device,
            dtype=self._dtype_name,
            attn_implementation=self._attn,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )
        return info

    # ------------------------------------------------------------------ loading
    def _resolve(self) -> tuple[str, Any, str]:
        import torch

        device = self._device_setting.strip().lower()
        if device == "auto":
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        elif device == "cuda":
            device = "cuda:0"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} requested but CUDA is not available")

        dtype_name = self._dtype_setting.strip().lower()
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device.startswith("cuda") else "float32"
        if dtype_name not in _DTYPES:
            raise BackendError(f"unknown dtype {self._dtype_setting!r}")
        dtype = getattr(torch, _DTYPES[dtype_name])

        attn = self._attn_setting.strip().lower()
        if attn == "auto":
            # FlashAttention-2 needs the package, a GPU and a 16-bit dtype; sdpa is the
            # portable fast path otherwise.
            flash_ok = (
                importlib.util.find_spec("flash_attn") is not None
                and device.startswith("cuda")
                and dtype in (torch.bfloat16, torch.float16)
            )
            attn = "flash_attention_2" if flash_ok else "sdpa"
        return device, dtype, attn

    def _not_found_message(self, error: Exception) -> str:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or self._local_files_only
        where = "offline mode is on and it is" if offline else "it is"
        return (
            f"could not load model {self._model_id!r}: {where} not in the local Hugging Face "
            f"cache ({type(error).__name__}: {error}). Download it once with "
            f"`huggingface-cli download {self._model_id}` (on a machine with network), or pass a "
            "local directory holding config.json, the weights and the processor files, e.g. "
            "model:=/path/to/SpatialThinker-7B"
        )

    def load(self) -> None:
        """Load processor and model. Raises BackendError with an actionable reason."""
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

            self._state = "loading"
            try:
                device, dtype, attn = self._resolve()
            except BackendError as exc:
                self._state = f"failed: {exc.reason}"
                raise
            local = Path(self._model_id).expanduser()
            source = str(local) if local.is_dir() else self._model_id
            if local.is_absolute() and not local.is_dir():
                reason = f"model directory {self._model_id!r} does not exist"
                self._state = f"failed: {reason}"
                raise BackendError(reason)
            common: dict[str, Any] = {"local_files_only": self._local_files_only}
            if self._revision:
                common["revision"] = self._revision
            started = time.monotonic()
            self._progress(f"loading processor of {source}")
            try:
                # The image processor's size bounds are the min/max pixels of smart_resize.
                processor = AutoProcessor.from_pretrained(
                    source,
                    size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                    **common,
                )
                self._progress(
                    f"loading model {source} (dtype {str(dtype).removeprefix('torch.')}, "
                    f"device {device}, attention {attn})"
                )
                model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                    source, dtype=dtype, attn_implementation=attn, **common
                )
            except OSError as exc:
                reason = self._not_found_message(exc)
                self._state = f"failed: model {self._model_id!r} not found"
                raise BackendError(reason) from exc
            except Exception as exc:
                reason = f"could not load model {self._model_id!r}: {type(exc).__name__}: {exc}"
                self._state = f"failed: {type(exc).__name__}"
                raise BackendError(reason) from exc
            try:
                model = model.to(device).eval()
            except torch.OutOfMemoryError as exc:
                del model
                self._free_cuda()
                self._state = "failed: out of memory"
                raise BackendError(
                    f"not enough GPU memory on {device} for {self._model_id!r} in "
                    f"{str(dtype).removeprefix('torch.')}: {exc}"
                ) from exc
            # Batches grow to the right during generation, so prompts must be padded left.
            processor.tokenizer.padding_side = "left"
            self._processor = processor
            self._scorer = _TokenScorer(processor.tokenizer)
            self._model = model
            self._device, self._dtype_name, self._attn = (
                device,
                str(dtype).removeprefix("torch."),
                attn,
            )
            self._state = "loaded"
            self._progress(f"model {source} ready in {time.monotonic() - started:.1f} s")

    @staticmethod
    def _free_cuda() -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def unload(self) -> None:
        """Drop the model and give its GPU memory back."""
        with self._lock:
            if self._model is None:
                return
            self._model = None
            self._processor = None
            self._free_cuda()
            self._state = "not loaded"

    # ------------------------------------------------------------------ generation
    def _chat_text(self, prompt: str) -> str:
        # One user message, image first then text, no system message (as the model card does).
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        return self._processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _generate_kwargs(
        self,
        settings: GenerationSettings,
        cancel: Sequence[threading.Event] | None,
        on_text: OnText,
        stops: tuple[set[int], int],
    ) -> dict[str, Any]:
        """The arguments of one ``generate`` call beyond the inputs."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kwargs: dict[str, Any] = {
            "max_new_tokens": int(settings.max_new_tokens),
            "return_dict_in_generate": True,
            # The raw logits of every step (before any processor or sampling setting): what
            # the token scores are read from, with no second forward pass.
            "output_logits": self.score_tokens,
        }
        if settings.min_new_tokens:
            kwargs["min_new_tokens"] = int(settings.min_new_tokens)
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(settings.temperature))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.logits_processor:
            kwargs["logits_processor"] = LogitsProcessorList(self.logits_processor)
        if cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_CancelRows(cancel)])
        if on_text is not None and any(on_text):
            eos_ids, pad_id = stops
            kwargs["streamer"] = _RowStreamer(self._processor.tokenizer, on_text, eos_ids, pad_id)
        return kwargs

    def _stop_ids(self) -> tuple[set[int], int]:
        """The end-of-turn token ids and the padding id (-1: none) of the model."""
        gen_cfg = self._model.generation_config
        pad_id = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else -1
        eos = gen_cfg.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        return eos_ids, pad_id

    def _run(
        self,
        images: list[np.ndarray],
        prompts: list[str],
        settings: GenerationSettings,
        cancel: Sequence[threading.Event] | None,
        on_text: OnText = None,
    ) -> list[BackendOutput]:
        import torch

        started = time.perf_counter()
        texts = [self._chat_text(p) for p in prompts]
        inputs = self._processor(
            text=texts, images=list(images), padding=True, return_tensors="pt"
        ).to(self._device)
        stops = self._stop_ids()
        kwargs = self._generate_kwargs(settings, cancel, on_text, stops)
        with torch.inference_mode():
            generated = self._model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = generated.sequences[:, prompt_len:]
        rows = new_tokens.cpu().tolist()
        counts = [_row_length(row, *stops) for row in rows]
        tokenizer = self._processor.tokenizer
        answers = [
            tokenizer.decode(row[:count], skip_special_tokens=True)
            for row, count in zip(rows, counts, strict=True)
        ]
        scores: list[TokenScores | None] = [None] * len(rows)
        if self.score_tokens:
            with torch.inference_mode():
                scores = list(self._scorer.scores(generated.logits, new_tokens, counts, answers))
        seconds = time.perf_counter() - started
        prompt_counts = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            BackendOutput(text, int(prompt_tokens), count, seconds, score)
            for text, prompt_tokens, count, score in zip(
                answers, prompt_counts, counts, scores, strict=True
            )
        ]

    def generate(
        self,
        images: Images,
        prompts: Prompts,
        settings: GenerationSettings,
        cancel: Cancel = None,
        on_text: OnText = None,
    ) -> list[BackendOutput | BackendError]:
        """Run one batched, left-padded generate; split once on CUDA out-of-memory.

        ``on_text`` gets each row's text as it is generated; the halves of a split batch do
        not stream (their rows may have passed on text already, which would come twice).
        """
        import torch

        if len(images) != len(prompts):
            raise ValueError("images and prompts differ in length")
        if not images:
            return []
        if self._model is None:
            return [BackendError(f"model not loaded ({self._state})")] * len(images)
        try:
            return list(self._run(images, prompts, settings, cancel, on_text))
        except torch.OutOfMemoryError as exc:
            first_error = exc
        except Exception as exc:
            reason = f"generation failed: {type(exc).__name__}: {exc}"
            return [BackendError(reason) for _ in images]

        # Out of memory: free what the failed call left and retry once in two halves; a half
        # that still does not fit fails with the reason instead of splitting forever.
        self._free_cuda()
        if len(images) == 1:
            return [BackendError(f"CUDA out of memory for a single request: {first_error}")]
        half = (len(images) + 1) // 2
        results: list[BackendOutput | BackendError] = []
        for lo, hi in ((0, half), (half, len(images))):
            part_cancel = list(cancel[lo:hi]) if cancel is not None else None
            try:
                results.extend(self._run(images[lo:hi], prompts[lo:hi], settings, part_cancel))
            except torch.OutOfMemoryError as exc:
                self._free_cuda()
                reason = (
                    f"CUDA out of memory for a batch of {len(images)}, and again for "
                    f"{hi - lo} after splitting: {exc}"
                )
                results.extend(BackendError(reason) for _ in range(hi - lo))
            except Exception as exc:
                reason = f"generation failed: {type(exc).__name__}: {exc}"
                results.extend(BackendError(reason) for _ in range(hi - lo))
        return results
