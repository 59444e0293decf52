"""The offline tiny Qwen2.5-VL loads and runs through the real transformers classes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from spatialthinker_ros.core.tiny_model import SPECIAL_TOKENS, build_tiny_model  # noqa: E402


def _digest(directory: Path) -> str:
    return hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


def test_loads_offline_with_auto_classes(tiny_model_dir: Path) -> None:
    processor = transformers.AutoProcessor.from_pretrained(tiny_model_dir)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    tok = processor.tokenizer
    # Every special token is a single id, not split by BPE.
    for special in SPECIAL_TOKENS:
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.text_config.vocab_size == len(tok)
    text_cfg = model.config.text_config
    head_dim = text_cfg.hidden_size // text_cfg.num_attention_heads
    assert sum(text_cfg.rope_parameters["mrope_section"]) == head_dim // 2
    assert model.config.vision_config.out_hidden_size == text_cfg.hidden_size
    assert processor.image_processor.patch_size == 14
    assert processor.image_processor.merge_size == 2


def test_chat_template_puts_image_before_text(tiny_model_dir: Path) -> None:
    processor = transformers.AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Is it left?"}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is it left?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_image_expands_to_one_token_per_28px_cell_and_generates(tiny_model_dir: Path) -> None:
    processor = transformers.AutoProcessor.from_pretrained(tiny_model_dir)
    model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    image = np.zeros((56, 84, 3), dtype=np.uint8)  # 2 x 3 merged cells of 28 px
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == pad_id).sum()) == 6
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a")
    b = build_tiny_model(tmp_path / "b")
    assert _digest(a) == _digest(b)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_command_line_writes_loadable_directory(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "spatialthinker_ros.core.tiny_model", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert (tmp_path / "m" / "model.safetensors").is_file()
