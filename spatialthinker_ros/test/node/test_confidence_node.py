"""The answer's confidence end to end: the node (a real subprocess, openai backend) asks the
scripted server for log-probabilities, publishes the option probabilities in ``SpatialAnswer``,
warns below ``min_confidence`` (a parameter a running node applies to the next answer), and
shows the recent confidences in /diagnostics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from node_harness import DEMO_SCENE, openai_params, running_node, scripted_reply
from scripted_openai_server import ScriptedOpenAIServer, TokenReply

TEXT = scripted_reply(DEMO_SCENE)  # "... <answer> (A) in front </answer>"


def _reply(body: dict[str, Any]) -> TokenReply:
    reply = TokenReply(TEXT(body))
    # At the answer's letter (the last "A"): A 0.7, B 0.2 of the two options.
    reply.top = {reply.index_of("A", -1): {"A": math.log(0.7), "B": math.log(0.2)}}
    return reply


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(default_reply=_reply) as scripted:
        yield scripted


@pytest.fixture(scope="module")
def node(server, rig):
    extra = {"model": "confidence", "max_batch_size": 1, "min_confidence": 0.9}
    with running_node(rig, openai_params(server.base_url, extra)) as process:
        yield process


def _values(status: Any) -> dict[str, str]:
    return {item.key: item.value for item in status.values}


def test_the_node_publishes_warns_and_reports_the_confidence(node, rig, server) -> None:
    rig.settle()
    response = rig.query()
    assert response.success, response.message
    answer = response.answer
    assert server.completion_requests[-1]["logprobs"] is True
    assert answer.confidence_source == answer.CONFIDENCE_TOKENS, answer.confidence_note
    assert list(answer.option_probabilities) == pytest.approx([0.7 / 0.9, 0.2 / 0.9], abs=1e-6)
    assert answer.confidence == pytest.approx(0.7 / 0.9, abs=1e-6)
    assert answer.choice == "A" and answer.option_mass == pytest.approx(0.9, abs=1e-6)
    assert any(w.startswith("low confidence: 0.778") for w in answer.warnings), answer.warnings
    status = rig.engine_status(lambda s: _values(s).get("confidence_measured", "0") != "0")
    values = _values(status)
    assert values["confidence_p50"] == "0.778"
    assert values["confidence_low"] == "1"

    # The threshold changed at run time applies to the next answer.
    rig.set_parameters({"min_confidence": 0.5})
    response = rig.query()
    assert response.success, response.message
    assert not any(w.startswith("low confidence") for w in response.answer.warnings)
