import json
import os

import pytest
from hypothesis import settings

# In CI the property tests draw a fixed sequence of examples, so a run is reproducible and a
# landing never depends on luck; locally they explore anew each run.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from pivotrl.data.sample import SAMPLE_PATH


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def sample_path():
    return SAMPLE_PATH


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1}},
    "required": ["city"]}}}]


def openai_record(**overrides):
    rec = {"id": "t1", "tools": TOOLS, "messages": [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "assistant", "content": "It rains in Oslo."},
    ]}
    rec.update(overrides)
    return rec


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random-init tiny Qwen3 with a tokenizer trained on the sample data, built here (~5 s)."""
    from pivotrl.data.sample import generate_sample_trajectories
    from pivotrl.models import build_tiny_model

    texts = [json.dumps(t.messages) for t in generate_sample_trajectories(40)]
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), texts, seed=0))


@pytest.fixture(scope="session")
def sample_states():
    from pivotrl import extract_states, load_trajectories

    return extract_states(load_trajectories(SAMPLE_PATH))
