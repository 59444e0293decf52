"""Prefill and decode speed of the SpatialThinker-7B architecture with random weights.

A randomly initialised model built from the real config runs at the same speed as the real
weights for the same token counts, so this needs neither the network nor the 16 GB checkpoint.
Output length is fixed with ``min_new_tokens = max_new_tokens``.

Reports, for plain ``generate`` (dynamic KV cache) and for static KV cache + torch.compile:

* prefill ms (one 640x480 image, about 540 prompt tokens);
* decode tokens/s single-stream and at batch 2/4/8 (per stream and aggregate);
* each decode figure as a fraction of the memory-bandwidth ceiling (bf16 weights streamed once
  per step: 236 steps/s on an H100 SXM, 338 on an H200).

Usage::

    python benchmarks/bench_gpu_generate.py                 # GPU, real 7B config
    python benchmarks/bench_gpu_generate.py --tiny          # CPU smoke run (keeps it from rotting)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import numpy as np
import torch

# Qwen2.5-VL-7B-Instruct (the base of SpatialThinker-7B), from its config.json.
SPATIALTHINKER_7B_TEXT = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": [16, 24, 24],
    },
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
}
SPATIALTHINKER_7B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
SPATIALTHINKER_7B_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}

# Small enough for a 2-core CPU in seconds; same code path.
TINY_TEXT = {
    **SPATIALTHINKER_7B_TEXT,
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": [2, 3, 3],
    },
    "bos_token_id": 1000,
    "eos_token_id": 1001,
    "pad_token_id": 1000,
}
TINY_VISION = {
    **SPATIALTHINKER_7B_VISION,
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
}
TINY_IDS = {
    "image_token_id": 1005,
    "video_token_id": 1006,
    "vision_start_token_id": 1003,
    "vision_end_token_id": 1004,
}

# Memory-bandwidth ceilings for one decode step of the 7B model in bf16 (steps/s).
CEILINGS = {"H100": 236.0, "H200": 338.0}


def build_model(tiny: bool, device: str, dtype: torch.dtype, attn: str) -> Any:
    """A random-weight Qwen2.5-VL with the 7B (or tiny) config on ``device``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(TINY_TEXT if tiny else SPATIALTHINKER_7B_TEXT),
        vision_config=dict(TINY_VISION if tiny else SPATIALTHINKER_7B_VISION),
        **(TINY_IDS if tiny else SPATIALTHINKER_7B_IDS),
    )
    torch.manual_seed(0)
    # Initialise directly on the target device: 8 B parameters on the CPU first would take
    # minutes and 33 GB of host memory in float32.
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn
        )
    model.eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    return model


def build_inputs(model: Any, batch: int, width: int, height: int, text_tokens: int, device: str):
    """Chat-shaped input ids with one image per row, processed by the real image processor."""
    from transformers import Qwen2VLImageProcessor

    cfg = model.config
    processor = Qwen2VLImageProcessor(min_pixels=512 * 512, max_pixels=1280 * 28 * 28)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    vision = processor(images=images, return_tensors="pt")
    grid = vision["image_grid_thw"]
    n_image = int(grid[0].prod()) // (cfg.vision_config.spatial_merge_size**2)
    vocab = cfg.text_config.vocab_size
    low = 10
    high = min(vocab, cfg.vision_start_token_id) - 10  # plain text ids, clear of special ones
    rows = []
    for _ in range(batch):
        before = rng.integers(low, high, 20).tolist()
        after = rng.integers(low, high, text_tokens).tolist()
        rows.append(
            before
            + [cfg.vision_start_token_id]
            + [cfg.image_token_id] * n_image
            + [cfg.vision_end_token_id]
            + after
        )
    input_ids = torch.tensor(rows, dtype=torch.long, device=device)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": vision["pixel_values"].to(device, model.dtype),
        "image_grid_thw": grid.to(device),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_generate(model: Any, inputs: dict, new_tokens: int, device: str, **extra) -> float:
    sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            **extra,
        )
    sync(device)
    elapsed = time.perf_counter() - started
    produced = out.shape[1] - inputs["input_ids"].shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"expected {new_tokens} new tokens, got {produced}")
    return elapsed


def measure(
    model: Any,
    mode: str,
    batches: list[int],
    new_tokens: int,
    repeats: int,
    device: str,
    image_size: tuple[int, int],
    text_tokens: int,
    compile_backend: str,
) -> dict[str, Any]:
    """Prefill ms and decode rates for one generation mode."""
    from transformers import CompileConfig

    extra: dict[str, Any] = {}
    if mode == "static+compile":
        compile_config = CompileConfig(backend=compile_backend, fullgraph=False)
        # transformers only auto-compiles on accelerators unless told otherwise.
        compile_config._compile_all_devices = True
        extra = {"cache_implementation": "static", "compile_config": compile_config}
    results: dict[str, Any] = {"mode": mode, "decode": {}}
    for batch in batches:
        inputs = build_inputs(model, batch, *image_size, text_tokens, device)
        # Warm-up (and compilation) at the lengths used below.
        timed_generate(model, inputs, 1, device, **extra)
        timed_generate(model, inputs, 2, device, **extra)
        timed_generate(model, inputs, new_tokens, device, **extra)
        prefill = min(timed_generate(model, inputs, 1, device, **extra) for _ in range(repeats))
        total = min(
            timed_generate(model, inputs, new_tokens, device, **extra) for _ in range(repeats)
        )
        steps_per_s = (new_tokens - 1) / max(total - prefill, 1e-9)
        if batch == batches[0]:
            results["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        if batch == 1:
            results["prefill_ms"] = prefill * 1e3
        results["decode"][batch] = {
            "per_stream_tok_s": steps_per_s,
            "aggregate_tok_s": steps_per_s * batch,
            "total_s": total,
        }
        del inputs
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small config, runs on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 256 (tiny: 16)")
    parser.add_argument("--batches", default=None, help="comma list, default 1,2,4,8")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (tiny: 1)")
    parser.add_argument("--modes", default="plain,static+compile")
    parser.add_argument("--compile-backend", default=None, help="default inductor (tiny: eager)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--text-tokens", type=int, default=130, help="question tokens after image")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if not args.tiny and not device.startswith("cuda"):
        print("the 7B config needs a GPU; use --tiny for a CPU smoke run", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    new_tokens = args.new_tokens or (16 if args.tiny else 256)
    repeats = args.repeats or (1 if args.tiny else 3)
    batches = [int(b) for b in (args.batches or "1,2,4,8").split(",")]
    if 1 not in batches:
        batches.insert(0, 1)
    # Inductor on a CPU needs minutes to compile; the eager backend still runs dynamo, so the
    # tiny smoke run exercises the same generate(static cache, compile_config) path.
    compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    try:
        import flash_attn  # noqa: F401

        attn = "flash_attention_2" if device.startswith("cuda") else "sdpa"
    except ImportError:
        attn = "sdpa"

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    ceiling = next((v for k, v in CEILINGS.items() if k in gpu), None)
    started = time.perf_counter()
    model = build_model(args.tiny, device, dtype, attn)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {'tiny' if args.tiny else 'SpatialThinker-7B architecture'} (random weights, "
        f"{params / 1e9:.2f} B params, {str(dtype).removeprefix('torch.')}, {attn}) on {gpu}, "
        f"built in {time.perf_counter() - started:.1f} s"
    )
    print(f"decode length {new_tokens} tokens, image {args.width}x{args.height}")

    all_results = []
    for mode in args.modes.split(","):
        mode = mode.strip()
        try:
            res = measure(
                model,
                mode,
                batches,
                new_tokens,
                repeats,
                device,
                (args.width, args.height),
                args.text_tokens,
                compile_backend,
            )
        except Exception as exc:  # report and continue with the other mode
            print(f"[{mode}] failed: {type(exc).__name__}: {exc}")
            continue
        all_results.append(res)
        print(f"[{mode}] prompt {res['prompt_tokens']} tokens, prefill {res['prefill_ms']:.1f} ms")
        for batch, d in res["decode"].items():
            frac = (
                f", {d['per_stream_tok_s'] / ceiling:.0%} of the {ceiling:.0f} tok/s ceiling"
                if ceiling
                else ""
            )
            print(
                f"[{mode}] batch {batch}: {d['per_stream_tok_s']:.1f} tok/s per stream, "
                f"{d['aggregate_tok_s']:.1f} tok/s aggregate{frac}"
            )
    if args.json:
        print(json.dumps({"device": gpu, "ceiling_tok_s": ceiling, "results": all_results}))
    return 0 if all_results else 1


if __name__ == "__main__":
    raise SystemExit(main())
