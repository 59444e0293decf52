"""Build a tiny random-weight Qwen2.5-VL that loads like SpatialThinker-7B, fully offline.

The real checkpoint is 16 GB and needs the network. Tests, CI and users who only want to check
that the pipeline runs need something that goes through exactly the same code path
(``AutoProcessor.from_pretrained`` + ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` +
chat template + ``generate``) in a second. This module writes such a directory: the real
architecture and processor classes with toy sizes, a byte-level BPE tokenizer trained here on a
small built-in corpus, and the Qwen2.5-VL special tokens and chat template.

Usage::

    python -m spatialthinker_ros.core.tiny_model /tmp/tiny_spatialthinker
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# The Qwen2.5-VL special tokens, in the order the real vocabulary lists them (ids after the
# BPE merges). Only these seven are needed for still images and the chat template.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# ChatML with vision placeholders, equivalent to Qwen2.5-VL's template: a default system prompt
# when the conversation has none, an image as <|vision_start|><|image_pad|><|vision_end|> (the
# processor expands the pad to one token per merged patch), and the assistant header when a
# generation prompt is asked for.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Enough text for BPE to learn merges for the SpatialThinker tags, JSON punctuation, digits and
# common words, so forced answers tokenise into a sane number of tokens.
_CORPUS: tuple[str, ...] = (
    "<observe> The image shows a table with a red mug and a laptop. </observe>",
    "<scene>\n"
    '{"objects": [{"id": "mug.1", "bbox": [120, 200, 180, 260]}, '
    '{"id": "laptop.1", "bbox": [300, 150, 520, 330]}], '
    '"relationships": [{"subject": "mug.1", "predicate": "left of", "object": "laptop.1"}]}\n'
    "</scene>",
    "<think> The mug is to the left of the laptop and closer to the camera. </think>",
    "<answer> (A) left of </answer>",
    "<answer> (B) behind </answer> <answer> (C) in front of </answer> <answer> (D) on </answer>",
    "You are a helpful assistant. Image size: 640 x 480. Image size: (644 x 476)",
    "Answer the question about the image. Options: (A) yes (B) no (C) left (D) right",
    "Which object is closer to the camera? Is the chair behind the person? How many cups?",
    "person.1 chair.2 bottle.3 cup.1 bike.1 man.1 car.2 dog.1 box.4 robot.1 shelf.2",
    "behind in front of sitting on near above below next to under inside holding",
    '{"id": "", "bbox": [0, 0, 0, 0]}, {"subject": "", "predicate": "", "object": ""}',
    "0 1 2 3 4 5 6 7 8 9 10 12 14 16 20 28 32 56 64 100 128 224 256 320 480 512 640 1024",
    "user assistant system \n\n ( ) [ ] { } , : . ? ! ' \" - _ / x",
)


def _train_tokenizer(vocab_size: int = 600):
    """Train a byte-level BPE tokenizer on the built-in corpus.

    Args:
        vocab_size: Target vocabulary size (byte alphabet + merges + special tokens).

    Returns:
        A ``tokenizers.Tokenizer``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level like Qwen's tokenizer: every string is representable, nothing is ever <unk>.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so frequent pieces win merges deterministically.
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    return tokenizer


# The vision tower's patch geometry, shared by the image processor and the model config.
_PATCH, _MERGE, _TEMPORAL = 14, 2, 2


def build_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-VL with processor and tokenizer to ``directory``.

    The result loads with ``AutoProcessor.from_pretrained(directory)`` and
    ``Qwen2_5_VLForConditionalGeneration.from_pretrained(directory)`` under
    ``HF_HUB_OFFLINE=1``. Same seed, same weights and tokenizer.

    Args:
        directory: Output folder (created if missing).
        seed: Seed for the random weights.

    Returns:
        The directory as a ``Path``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    processor = _processor(tokenizer)
    model = _model(_config(len(tokenizer), ids), ids, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tokenizer() -> Any:
    """The trained BPE tokenizer as a transformers fast tokenizer, with the chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        # Batched generation appends new tokens on the right, so prompts are padded left.
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _processor(tokenizer: Any) -> Any:
    """Qwen2.5-VL's processor: the real image and video processors with the tiny patch sizes."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        patch_size=_PATCH,
        merge_size=_MERGE,
        temporal_patch_size=_TEMPORAL,
        min_pixels=56 * 56,
        max_pixels=28 * 28 * 1280,
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=_PATCH, merge_size=_MERGE, temporal_patch_size=_TEMPORAL
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _config(vocab_size: int, ids: dict[str, int]) -> Any:
    """The real Qwen2.5-VL architecture with toy sizes (2 text and 2 vision layers)."""
    from transformers import Qwen2_5_VLConfig

    hidden, heads = 64, 4
    head_dim = hidden // heads  # 16 -> mrope sections must sum to 8
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": _PATCH,
            "spatial_merge_size": _MERGE,
            "temporal_patch_size": _TEMPORAL,
            "window_size": 112,
            "out_hidden_size": hidden,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    return config


def _model(config: Any, ids: dict[str, int], seed: int) -> Any:
    """The model with random weights drawn from ``seed``, greedy decoding by default."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    return model


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m spatialthinker_ros.core.tiny_model DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(args.directory, seed=args.seed)
    print(f"tiny Qwen2.5-VL written to {path} (load it with model:={path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
