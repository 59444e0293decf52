"""Option probabilities through the openai backend, against the scripted test server serving
``logprobs`` as vLLM does (its numbers are scripted: a stand-in for a model's).

The answer's probabilities are the served ones, renormalised over the options (an option the
server did not list counts as 0); a server that returns none, refuses the fields or sends them
malformed still answers, unchanged, with the confidence ``unavailable`` and the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scripted_openai_server import RawReply, ScriptedOpenAIServer, TokenReply, completion_body

from spatialthinker_ros.answering.parameters import PARAMETERS
from spatialthinker_ros.answering.pipeline import AnsweringPipeline, Frames, SceneAnswer
from spatialthinker_ros.cli.offline_pipeline import render

OPTIONS = ["left of", "behind", "right of", "on"]
TEXT = "<observe> A mug. </observe>\n<think> It is behind. </think>\n<answer> (B) behind </answer>"
# Served at the answer's letter: D is not listed (counts as 0); E is a letter outside the options.
SERVED = {"A": math.log(0.2), "B": math.log(0.5), "C": math.log(0.1), "E": math.log(0.05)}
SERVED_OTHER = {" (": math.log(0.1)}  # a listed alternative that is no letter
EXPECTED = [0.2 / 0.8, 0.5 / 0.8, 0.1 / 0.8, 0.0]
WAIT = 60.0


def _reply(text: str = TEXT, **options: Any) -> TokenReply:
    reply = TokenReply(text, **options)
    if not reply.top:
        reply.top = {reply.index_of("B"): {**SERVED, **SERVED_OTHER}}
    return reply


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(default_reply=_reply()) as scripted:
        yield scripted


def _pipeline(server: ScriptedOpenAIServer, **overrides: Any) -> AnsweringPipeline:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(
        backend="openai",
        model="spatialthinker-test",
        **{"openai.base_url": server.base_url, "openai.max_retries": 0},
    )
    values.update(overrides)
    pipeline = AnsweringPipeline(values, {"check_on_load": False})
    pipeline.start()
    return pipeline


def _ask(server: ScriptedOpenAIServer, options: list[str] = OPTIONS, **overrides: Any) -> Any:
    pipeline = _pipeline(server, **overrides)
    try:
        rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        answer = pipeline.submit(Frames(rgb), "Where is the mug?", options, "q").result(WAIT)
        return answer, render(answer), pipeline.stats()
    finally:
        pipeline.shutdown()


@pytest.mark.parametrize("stream", [True, False])
def test_the_answers_probabilities_are_the_served_ones(server, stream: bool) -> None:
    answer, data, _ = _ask(server, stream=stream)
    [body] = server.completion_requests
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert data["confidence_source"] == "tokens", data["confidence_note"]
    assert data["option_probabilities"] == pytest.approx(EXPECTED, abs=1e-6)
    assert data["choice"] == "B" and data["confidence"] == pytest.approx(0.625, abs=1e-6)
    assert data["option_mass"] == pytest.approx(0.8, abs=1e-6)
    assert data["other_letters_mass"] == pytest.approx(0.05, abs=1e-6)  # E
    # The answer's tokens " (", "B", ")", " behind": three at the default -0.05, "B" at ln 0.5.
    assert data["answer_mean_logprob"] == pytest.approx((3 * -0.05 + math.log(0.5)) / 4, abs=1e-4)
    assert data["confidence_note"] == ""
    assert answer.confidence.option_logprobs[:3] == pytest.approx(
        [SERVED["A"], SERVED["B"], SERVED["C"]]
    )


def test_a_letter_the_server_writes_in_one_token_with_its_parenthesis(server) -> None:
    tokens = ["<answer>", " (B", ")", " behind", " </answer>"]
    top = {1: {" (A": math.log(0.3), " (B": math.log(0.6), " (C": math.log(0.05), "B": -1.0}}
    server.add_replies(TokenReply("".join(tokens), tokens=tokens, top=top))
    _, data, _ = _ask(server, OPTIONS[:3])
    # "B" alone is another token shape: not an option's letter here.
    assert data["option_probabilities"] == pytest.approx(
        [0.3 / 0.95, 0.6 / 0.95, 0.05 / 0.95], abs=1e-6
    )
    assert data["confidence"] == pytest.approx(0.6 / 0.95, abs=1e-6)


def test_a_server_that_returns_none_still_answers_unchanged(server) -> None:
    _, scored, _ = _ask(server)
    server.add_replies(TEXT)  # the same text, without log-probabilities
    _, data, _ = _ask(server)
    assert data["confidence_source"] == "unavailable"
    assert data["confidence_note"] == "the server returned no log-probabilities"
    assert data["confidence"] is None and data["option_probabilities"] == []
    for key in ("answer", "choice", "choice_index", "raw_output", "objects", "relations"):
        assert data[key] == scored[key], key


def test_a_server_that_refuses_the_fields_answers_without_them_from_then_on(server) -> None:
    server.refuse_logprobs = True
    pipeline = _pipeline(server)
    try:
        rgb = np.zeros((48, 64, 3), np.uint8)
        first = pipeline.submit(Frames(rgb), "Where?", OPTIONS, "1").result(WAIT)
        second = pipeline.submit(Frames(rgb), "Where?", OPTIONS, "2").result(WAIT)
    finally:
        pipeline.shutdown()
    asked = [("logprobs" in body, "top_logprobs" in body) for body in server.completion_requests]
    # Refused once, asked again at once without them, and never with them after.
    assert asked == [(True, True), (False, False), (False, False)]
    for answer in (first, second):
        assert answer.parsed.choice == "B" and answer.engine.raw_text == TEXT
        assert not answer.confidence.measured
        assert "refused log-probabilities" in answer.confidence.note
        assert "greater than max allowed" in answer.confidence.note


def test_malformed_logprobs_cost_the_confidence_not_the_answer(server) -> None:
    body = json.loads(completion_body(TEXT))
    body["choices"][0]["logprobs"] = {"content": [{"token": "<", "logprob": "very likely"}]}
    server.add_replies(RawReply(json.dumps(body).encode()))
    answer, data, _ = _ask(server, stream=False)
    assert answer.parsed.choice == "B"
    assert data["confidence_source"] == "unavailable"
    assert "malformed log-probabilities" in data["confidence_note"]


def test_a_nul_in_the_output_keeps_the_letter_where_it_is(server) -> None:
    # NUL is removed from the published text (ROS strings end at it): the tokens' positions
    # move with it, and the letter is still found.
    server.add_replies(_reply(TEXT.replace("mug.", "mug\x00\x00.")))
    answer, data, _ = _ask(server)
    assert "\x00" not in answer.engine.raw_text
    assert data["option_probabilities"] == pytest.approx(EXPECTED, abs=1e-6)


def test_open_questions_and_answers_without_a_letter_say_why(server) -> None:
    _, data, _ = _ask(server, [])
    assert data["confidence_source"] == "unavailable"
    assert data["confidence_note"].startswith("open question")
    assert data["answer_mean_logprob"] == pytest.approx((3 * -0.05 + math.log(0.5)) / 4, abs=1e-4)
    server.add_replies(TokenReply(TEXT.replace("(B) behind", "behind")))
    _, data, _ = _ask(server)
    assert data["choice"] == "B"  # named by its text
    assert data["confidence_note"].startswith("answer without a letter")


def test_temperature_and_min_confidence_apply_to_the_answer(server) -> None:
    answer, data, stats = _ask(server, confidence_temperature=2.0, min_confidence=0.6)
    # p_i proportional to exp(log p_i / 2) = sqrt(p_i): sqrt(.2), sqrt(.5), sqrt(.1), 0.
    roots = [math.sqrt(0.2), math.sqrt(0.5), math.sqrt(0.1), 0.0]
    expected = [r / sum(roots) for r in roots]
    assert data["option_probabilities"] == pytest.approx(expected, abs=1e-6)
    assert data["confidence"] == pytest.approx(expected[1], abs=1e-6)  # 0.481: below 0.6
    assert data["option_mass"] == pytest.approx(0.8, abs=1e-6)  # the model's own, untempered
    [low] = [w for w in data["warnings"] if w.startswith("low confidence")]
    assert "0.481" in low and "min_confidence 0.6" in low
    assert answer.confidence.temperature == 2.0
    assert stats["confidence_answers"] == 1 and stats["confidence_measured"] == 1
    assert stats["confidence_p50"] == pytest.approx(expected[1])
    assert stats["confidence_low"] == 1
    assert stats["confidence_histogram"].startswith("0-0.2: 0, 0.2-0.4: 0, 0.4-0.6: 1")
    # Above the threshold: no warning; not measured: a warning saying so.
    _, data, _ = _ask(server, min_confidence=0.6)
    assert not any(w.startswith("low confidence") for w in data["warnings"])
    server.add_replies(TEXT)
    _, data, stats = _ask(server, min_confidence=0.6)
    assert any(w.startswith("low confidence: not measured") for w in data["warnings"])
    assert stats["confidence_measured"] == 0 and stats["confidence_low"] == 1


def test_the_answer_is_built_the_same_with_and_without_a_confidence() -> None:
    # A SceneAnswer built by hand (tests, tools) has an unavailable confidence by default.
    assert SceneAnswer.__dataclass_fields__["confidence"].default_factory().source == "unavailable"
