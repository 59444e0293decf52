"""The transformers backend through the real load and generate path, on the tiny model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forced_text import ForcedText  # noqa: E402

from spatialthinker_ros.core.backends import (  # noqa: E402
    BackendError,
    BackendOutput,
    GenerationSettings,
    create_backend,
)
from spatialthinker_ros.core.backends.transformers_backend import TransformersBackend  # noqa: E402

# Small pixel bounds keep the vision tower cheap on a 2-core CPU.
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16
GREEDY = GenerationSettings(max_new_tokens=12)


def _image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    b = create_backend(
        "transformers", model=tiny_model_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS
    )
    assert isinstance(b, TransformersBackend)
    b.load()
    yield b
    b.unload()


@pytest.fixture
def forced(backend: TransformersBackend):
    """Install a ForcedText processor for one test and remove it afterwards."""
    installed: list[ForcedText] = []

    def install(targets: str | list[str]) -> ForcedText:
        proc = ForcedText(backend.processor.tokenizer, targets)
        backend.logits_processor = [proc]
        installed.append(proc)
        return proc

    yield install
    backend.logits_processor = []


def test_loads_with_cpu_defaults(backend: TransformersBackend) -> None:
    info = backend.describe()
    assert backend.loaded and backend.state == "loaded"
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"
    assert info["attn_implementation"] == "sdpa"
    size = backend.processor.image_processor.size
    # The processor's smart_resize bounds are the engine's model-frame bounds.
    assert (size.shortest_edge, size.longest_edge) == (MIN_PIXELS, MAX_PIXELS)
    assert backend.processor.tokenizer.padding_side == "left"


def test_single_request_counts_tokens(backend: TransformersBackend) -> None:
    image = _image(0, 56, 84)  # 2 x 3 cells of 28 px -> 6 image tokens
    [out] = backend.generate([image], ["Where is the cup?"], GREEDY)
    assert isinstance(out, BackendOutput)
    assert 1 <= out.output_tokens <= 12
    tok = backend.processor.tokenizer
    text_only = backend._chat_text("Where is the cup?")
    # The prompt is the chat text with the one image pad expanded to 6 tokens.
    assert out.prompt_tokens == len(tok.encode(text_only, add_special_tokens=False)) - 1 + 6
    assert out.seconds > 0


def test_batched_rows_equal_the_same_requests_alone(backend: TransformersBackend) -> None:
    # Different image sizes and prompt lengths, so the batch is really left-padded.
    images = [_image(1, 56, 84), _image(2, 112, 112), _image(3, 84, 56)]
    prompts = ["short", "a much longer question about the scene in the picture", "mid size q"]
    batched = backend.generate(images, prompts, GREEDY)
    alone = [backend.generate([i], [p], GREEDY)[0] for i, p in zip(images, prompts, strict=True)]
    assert all(isinstance(o, BackendOutput) for o in batched)
    assert [o.text for o in batched] == [o.text for o in alone]
    assert [o.output_tokens for o in batched] == [o.output_tokens for o in alone]
    assert [o.prompt_tokens for o in batched] == [o.prompt_tokens for o in alone]
    assert len({o.prompt_tokens for o in batched}) == 3


def test_forced_text_comes_out_exactly(backend: TransformersBackend, forced) -> None:
    targets = ["<answer> (A) left </answer>", '<scene>\n{"objects": []}\n</scene>']
    forced(targets)
    outs = backend.generate(
        [_image(4, 56, 56), _image(5, 56, 112)], ["q1", "question two"], GenerationSettings(64)
    )
    assert [o.text for o in outs] == targets
    tok = backend.processor.tokenizer
    # Generated tokens include the end-of-turn token, not the padding after it.
    assert [o.output_tokens for o in outs] == [
        len(tok.encode(t, add_special_tokens=False)) + 1 for t in targets
    ]


def test_max_new_tokens_bounds_output(backend: TransformersBackend, forced) -> None:
    forced("one two three four five six seven eight nine ten eleven twelve")
    [out] = backend.generate([_image(6, 56, 56)], ["q"], GenerationSettings(max_new_tokens=3))
    assert out.output_tokens == 3
    assert out.text == backend.processor.tokenizer.decode(
        backend.processor.tokenizer.encode("one two three four five six seven")[:3]
    )


def test_cancel_event_stops_only_its_row(backend: TransformersBackend, forced) -> None:
    long = " ".join(["left of the mug"] * 10)
    forced(long)
    stop, keep = threading.Event(), threading.Event()
    stop.set()
    outs = backend.generate(
        [_image(7, 56, 56), _image(8, 56, 56)], ["a", "b"], GenerationSettings(200), [stop, keep]
    )
    assert outs[0].output_tokens == 1
    assert outs[1].text == long


def test_out_of_memory_splits_the_batch_once(backend: TransformersBackend, monkeypatch) -> None:
    real_generate = backend._model.generate
    sizes: list[int] = []

    def generate_fitting_two(**kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    monkeypatch.setattr(backend._model, "generate", generate_fitting_two)
    images = [_image(10 + i, 56, 56) for i in range(4)]
    outs = backend.generate(images, ["a", "b", "c", "d"], GREEDY)
    assert sizes == [4, 2, 2]
    assert all(isinstance(o, BackendOutput) for o in outs)


def test_out_of_memory_after_split_fails_with_reason(
    backend: TransformersBackend, monkeypatch
) -> None:
    sizes: list[int] = []

    def always_oom(**kwargs):
        sizes.append(int(kwargs["input_ids"].shape[0]))
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(backend._model, "generate", always_oom)
    outs = backend.generate([_image(i, 56, 56) for i in range(3)], ["a", "b", "c"], GREEDY)
    assert sizes == [3, 2, 1]  # split once, never further
    assert all(isinstance(o, BackendError) for o in outs)
    assert "out of memory" in outs[0].reason and "after splitting" in outs[0].reason


def test_missing_model_offline_names_id_and_local_directory(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b = TransformersBackend(model="OX-PIXL/SpatialThinker-7B-not-cached")
    with pytest.raises(BackendError) as info:
        b.load()
    reason = info.value.reason
    assert "OX-PIXL/SpatialThinker-7B-not-cached" in reason
    assert "local directory" in reason and "model:=" in reason
    assert not b.loaded and b.state.startswith("failed")


def test_missing_local_directory_is_reported(tmp_path: Path) -> None:
    b = TransformersBackend(model=tmp_path / "nowhere")
    with pytest.raises(BackendError, match="does not exist"):
        b.load()


def test_unload_releases_and_generate_then_fails(tiny_model_dir: Path) -> None:
    progress: list[str] = []
    b = TransformersBackend(
        model=tiny_model_dir,
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        progress=progress.append,
    )
    b.load()
    assert any("ready" in line for line in progress)
    b.unload()
    assert not b.loaded and b._model is None
    [out] = b.generate([_image(0, 56, 56)], ["q"], GREEDY)
    assert isinstance(out, BackendError) and "not loaded" in out.reason


def test_cuda_request_without_cuda_fails_clearly(tiny_model_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    b = TransformersBackend(model=tiny_model_dir, device="cuda:0")
    with pytest.raises(BackendError, match="CUDA is not available"):
        b.load()
