"""Acceptance: the option probabilities an answer publishes are the tiny model's own, read from
its generation's raw logits, for single, batched and streamed generation.

Every published probability (the ``SpatialAnswer`` message's float32 fields) is checked against
an independent teacher-forced forward pass of the same model over the prompt and the generated
text: the softmax at the position where the model wrote the answer's letter, renormalised over
the options' letters, within 1e-4. The model writes a forced text (a ``LogitsProcessor`` allows
only its next token), so its *processed* scores are all ``-inf`` but one: probabilities read
from those, or at another position, fail here. The language head is scaled up so the random
model's distributions are peaked and differ from position to position.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forced_text import ForcedText  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from spatialthinker_ros.answering.parameters import PARAMETERS  # noqa: E402
from spatialthinker_ros.answering.pipeline import AnsweringPipeline, Frames  # noqa: E402
from spatialthinker_ros.core.backends import GenerationSettings  # noqa: E402
from spatialthinker_ros.core.backends.transformers_backend import TransformersBackend  # noqa: E402
from spatialthinker_ros.core.confidence import answer_confidence  # noqa: E402
from spatialthinker_ros.core.parsing import parse_output  # noqa: E402

MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16
OPTIONS = ["left of", "behind", "right of", "on"]
# "A" in "A mug" is a letter too: the one read must be the answer's.
TARGET = (
    "<observe> A mug. </observe>\n<think> It is behind. </think>\n<answer> (B) behind </answer>"
)
TOLERANCE = 1e-4
WAIT = 300.0  # a loaded 2-core CI machine; the tiny model answers in well under a second


def _values(tiny_model_dir: Path, **overrides: Any) -> dict[str, Any]:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(
        backend="transformers",
        model=str(tiny_model_dir),
        device="cpu",
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        max_new_tokens=64,
        max_batch_size=4,
    )
    values.update(overrides)
    return values


def _frames(seed: int, size: tuple[int, int] = (84, 56)) -> Frames:
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Frames(rgb)


class _Inputs:
    """What the backend was given (images and prompts of every ``generate`` call)."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.calls: list[tuple[list[np.ndarray], list[str], bool]] = []
        self._run = backend._run

        def run(images, prompts, settings, cancel, on_text=None):
            streaming = on_text is not None and any(on_text)
            self.calls.append((list(images), list(prompts), streaming))
            return self._run(images, prompts, settings, cancel, on_text)

        backend._run = run  # type: ignore[method-assign]

    def row(self, prompt_contains: str) -> tuple[np.ndarray, str]:
        for images, prompts, _ in self.calls:
            for image, prompt in zip(images, prompts, strict=True):
                if prompt_contains in prompt:
                    return image, prompt
        raise AssertionError(f"no row asked {prompt_contains!r}")


def _pipeline(tiny_model_dir: Path, stream: bool) -> tuple[AnsweringPipeline, _Inputs]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pipeline = AnsweringPipeline(
        _values(tiny_model_dir, stream=stream),
        {"logits_processor": [ForcedText(tokenizer, TARGET)]},
        batch_wait_s=1.0,  # requests submitted together are answered in one batch
    )
    pipeline.start()
    with torch.no_grad():
        pipeline.backend._model.lm_head.weight.mul_(20.0)  # peaked, position-dependent
    return pipeline, _Inputs(pipeline.backend)


@pytest.fixture(scope="module")
def whole(tiny_model_dir: Path) -> Iterator[tuple[AnsweringPipeline, _Inputs]]:
    pipeline, inputs = _pipeline(tiny_model_dir, stream=False)
    yield pipeline, inputs
    pipeline.shutdown()


@pytest.fixture(scope="module")
def streamed(tiny_model_dir: Path) -> Iterator[tuple[AnsweringPipeline, _Inputs]]:
    pipeline, inputs = _pipeline(tiny_model_dir, stream=True)
    yield pipeline, inputs
    pipeline.shutdown()


def _teacher_forced(
    backend: TransformersBackend, image: np.ndarray, prompt: str, text: str
) -> tuple[torch.Tensor, list[int]]:
    """Log-softmax at every generated position from one forward pass over prompt + text (no
    cache, no batch), and the generated ids."""
    processor, model = backend.processor, backend._model
    tokenizer = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    chat = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[chat], images=[image], return_tensors="pt")
    generated = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([generated])], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:  # the generated tokens are text
        extra["mm_token_type_ids"] = torch.nn.functional.pad(
            extra["mm_token_type_ids"], (0, len(generated))
        )
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0]
    positions = logits[prompt_len - 1 : prompt_len - 1 + len(generated)]
    return torch.log_softmax(positions.double(), dim=-1), generated


def _expected(
    backend: TransformersBackend, image: np.ndarray, prompt: str, text: str = TARGET
) -> dict[str, Any]:
    """What the answer must publish, from the teacher-forced pass alone."""
    tokenizer = backend.processor.tokenizer
    logprobs, generated = _teacher_forced(backend, image, prompt, text)
    pieces = [tokenizer.decode([token]) for token in generated]
    letter = max(i for i, piece in enumerate(pieces) if piece == "B")  # the answer's "(B"
    letters = [tokenizer.convert_tokens_to_ids(chr(65 + i)) for i in range(26)]
    assert len(set(letters)) == 26 and pieces[letter - 1] == " ("
    p = logprobs[letter].exp()
    options = p[letters[: len(OPTIONS)]]
    answer_tokens = [letter - 1, letter, letter + 1, letter + 2]  # " (", "B", ")", " behind"
    assert "".join(pieces[i] for i in answer_tokens) == " (B) behind"
    chosen = [logprobs[i, generated[i]].item() for i in answer_tokens]
    return {
        "option_probabilities": (options / options.sum()).tolist(),
        "confidence": (options[1] / options.sum()).item(),
        "option_mass": options.sum().item(),
        "other_letters_mass": p[letters[len(OPTIONS) :]].sum().item(),
        "answer_mean_logprob": sum(chosen) / len(chosen),
    }


def _check(
    backend: TransformersBackend, inputs: _Inputs, question: str, answer: Any, text: str = TARGET
) -> None:
    from std_msgs.msg import Header

    from spatialthinker_ros.ros.ros_conversions import answer_message

    message = answer_message(Header(), answer)
    assert answer.engine.raw_text == text
    assert message.confidence_source == message.CONFIDENCE_TOKENS, message.confidence_note
    expected = _expected(backend, *inputs.row(question), text)
    published = list(message.option_probabilities)
    assert len(published) == len(OPTIONS)
    np.testing.assert_allclose(published, expected["option_probabilities"], atol=TOLERANCE)
    # The distribution is peaked: a wrong position or option order would be far off.
    assert max(expected["option_probabilities"]) - min(expected["option_probabilities"]) > 0.05
    assert message.choice == "B" and message.choice_index == 1
    for name in ("confidence", "option_mass", "other_letters_mass"):
        assert getattr(message, name) == pytest.approx(expected[name], abs=TOLERANCE), name
    assert message.answer_mean_logprob == pytest.approx(expected["answer_mean_logprob"], abs=1e-3)


def test_single_generation_publishes_the_models_own_probabilities(whole) -> None:
    pipeline, inputs = whole
    question = "Where is the mug relative to the laptop?"
    answer = pipeline.answer(_frames(1), question, OPTIONS, "single")
    _check(pipeline.backend, inputs, question, answer)


def test_batched_generation_publishes_each_rows_own_probabilities(whole) -> None:
    pipeline, inputs = whole
    calls = len(inputs.calls)
    # Different images and prompt lengths: the batch is left-padded.
    asked = [
        (_frames(2, (84, 56)), "Is the mug left of the laptop, or where?"),
        (_frames(3, (112, 112)), "Where is it?"),
        (_frames(4, (56, 84)), "Where is the red mug compared with the open laptop on the desk?"),
    ]
    handles = [pipeline.submit(f, q, OPTIONS, f"batched-{i}") for i, (f, q) in enumerate(asked)]
    answers = [handle.result(WAIT) for handle in handles]
    assert [len(prompts) for _, prompts, _ in inputs.calls[calls:]] == [3]  # one batch
    for (_, question), answer in zip(asked, answers, strict=True):
        _check(pipeline.backend, inputs, question, answer)
    confidences = {round(a.confidence.confidence, 6) for a in answers}
    assert len(confidences) == 3  # each row's own distribution


def test_streamed_generation_publishes_the_models_own_probabilities(streamed) -> None:
    pipeline, inputs = streamed
    question = "Where is the mug? (streamed)"
    reports: list[Any] = []
    done = threading.Event()
    handle = pipeline.submit(
        _frames(5),
        question,
        OPTIONS,
        "streamed",
        on_progress=reports.append,
        on_done=lambda _: done.set(),
    )
    answer = handle.result(WAIT)
    assert done.wait(WAIT)
    assert inputs.calls[-1][2], "the backend did not stream"
    assert reports and reports[-1].chars > 0  # text came while it was written
    _check(pipeline.backend, inputs, question, answer)


def test_characters_split_over_tokens_before_the_answer_keep_it_in_place(whole) -> None:
    # The byte-level tokenizer writes "😀" and "é" a byte a token: the tokens' texts are found
    # by their bytes, so the letter after them is still the one read.
    pipeline, inputs = whole
    text = TARGET.replace("A mug.", "A mug 😀 é.")
    tokenizer = pipeline.backend.processor.tokenizer
    assert len(tokenizer.encode("😀", add_special_tokens=False)) > 1
    forced = pipeline.backend.logits_processor
    pipeline.backend.logits_processor = [ForcedText(tokenizer, text)]
    try:
        question = "Where is the mug? (emoji)"
        answer = pipeline.answer(_frames(7), question, OPTIONS, "emoji")
    finally:
        pipeline.backend.logits_processor = forced
    _check(pipeline.backend, inputs, question, answer, text)


def test_a_letter_that_shares_its_token_with_the_parenthesis(tiny_model_dir: Path) -> None:
    # Tokenizers merge "(B" (or " B") into one token: the options are then compared as the
    # same token with the letter swapped ("(A", "(C", ...), never as the letter alone.
    backend = TransformersBackend(tiny_model_dir, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    backend.load()
    tokenizer = backend.processor.tokenizer
    tokenizer.add_tokens(["(A", "(B", "(C", "(D"])
    backend._model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        backend._model.lm_head.weight.mul_(20.0)
    backend.logits_processor = [ForcedText(tokenizer, TARGET)]
    image, prompt = _frames(6).rgb, "Where is the mug?"
    [output] = backend.generate([image], [prompt], GenerationSettings(64))
    assert output.text == TARGET
    logprobs, generated = _teacher_forced(backend, image, prompt, TARGET)
    merged = tokenizer.convert_tokens_to_ids("(B")
    assert generated.count(merged) == 1  # the letter is written as "(B", one token
    variants = [tokenizer.convert_tokens_to_ids(f"({chr(65 + i)}") for i in range(4)]
    p = logprobs[generated.index(merged)].exp()[variants]
    parsed = parse_output(output.text, options=OPTIONS)
    confidence = answer_confidence(parsed, OPTIONS, output.token_scores)
    assert confidence.measured, confidence.note
    np.testing.assert_allclose(confidence.option_probabilities, (p / p.sum()).tolist(), atol=1e-6)
    # A fifth option's "(E" is no token: its probability cannot be read here, and that is said.
    five = [*OPTIONS, "under"]
    fifth = answer_confidence(parse_output(output.text, options=five), five, output.token_scores)
    assert not fifth.measured and "E" in fifth.note and "one token" in fifth.note
    backend.unload()


def test_a_detections_score_is_the_models_probability_of_writing_the_objects_id(whole) -> None:
    # ~/detections_*'s score: the probability the model gave, at generation, to the tokens of
    # the object's id where the scene graph writes it; checked against a teacher-forced pass.
    from std_msgs.msg import Header

    from spatialthinker_ros.ros.detections import detections_2d
    from spatialthinker_ros.ros.ros_conversions import answer_message

    pipeline, inputs = whole
    # Short (the fixture's pipeline writes at most 64 tokens): no reasoning section.
    text = (
        '<observe>A mug.</observe><scene>{"objects":[{"id":"mug.1","bbox":[2,3,40,30]}]}'
        "</scene><answer>(B) behind</answer>"
    )
    tokenizer = pipeline.backend.processor.tokenizer
    forced = pipeline.backend.logits_processor
    pipeline.backend.logits_processor = [ForcedText(tokenizer, text)]
    try:
        question = "Where is the mug? (scene)"
        answer = pipeline.answer(_frames(8), question, OPTIONS, "scene")
    finally:
        pipeline.backend.logits_processor = forced
    assert answer.engine.raw_text == text
    logprobs, generated = _teacher_forced(pipeline.backend, *inputs.row(question), text)
    ends = [len(tokenizer.decode(generated[: k + 1])) for k in range(len(generated))]
    starts = [0, *ends[:-1]]
    expected = []
    for object_id in ("mug.1",):
        at = text.index(f'"{object_id}"', text.index("<scene>")) + 1
        tokens = [
            k for k in range(len(generated)) if starts[k] < at + len(object_id) and ends[k] > at
        ]
        expected.append(float(np.exp(sum(logprobs[k, generated[k]].item() for k in tokens))))
    np.testing.assert_allclose(answer.engine.object_scores, expected, rtol=1e-4)
    assert min(expected) > 0.0 and max(expected) < 1.0  # peaked, not certain: a real reading
    array = detections_2d(
        answer_message(Header(), answer).scene_graph, Header(), answer.engine.object_scores
    )
    published = [d.results[0].hypothesis.score for d in array.detections]
    np.testing.assert_allclose(published, expected, rtol=1e-4)
