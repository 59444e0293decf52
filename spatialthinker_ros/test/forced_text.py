"""Test helper: make a (random-weight) model emit an exact text through the real generate path.

``ForcedText`` is a transformers ``LogitsProcessor`` that, at every decoding step, allows only
the next token of a target string (then the end-of-turn token). It is stateless: each row finds
where its answer starts from the last ``<|im_start|>assistant\\n`` header in its own ids, so one
instance works for batches, left padding and repeated ``generate`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor


class ForcedText(LogitsProcessor):
    """Force the generated text of every row to ``targets[row]`` followed by ``<|im_end|>``.

    Args:
        tokenizer: The model's tokenizer.
        targets: One text for all rows, or one per row.
    """

    def __init__(self, tokenizer: Any, targets: str | Sequence[str]) -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.header = tokenizer.encode("assistant\n", add_special_tokens=False)
        self.target_ids = [
            [*tokenizer.encode(text, add_special_tokens=False), self.end_id]
            for text in self.targets
        ]

    def _answer_start(self, ids: list[int]) -> int:
        last = len(ids) - 1 - ids[::-1].index(self.start_id)
        return last + 1 + len(self.header)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            ids = input_ids[row].tolist()
            generated = ids[self._answer_start(ids) :]
            target = self.target_ids[row if len(self.target_ids) > 1 else 0]
            step = len(generated)
            next_id = target[step] if step < len(target) else self.end_id
            forced[row, next_id] = 0.0
        return forced
