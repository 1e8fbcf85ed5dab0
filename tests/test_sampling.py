import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pivotrl import DataError
from pivotrl.sampling import Prompt, SamplingParams, get_sampler


def test_transformers_modes_give_n_samples_each(tiny_model, sample_states):
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:3]]
    params = SamplingParams(n=2, max_tokens=8)
    for opts in ({"batch_size": 8}, {"batch_size": 1}, {"per_sample": True}):
        res = get_sampler("transformers", model=tiny_model, **opts).sample(prompts, params, seed=0)
        assert [len(r.samples) for r in res] == [2, 2, 2]
        assert all(0 < s.tokens <= 8 and isinstance(s.completion, str) for r in res for s in r.samples)


def test_same_seed_same_samples(tiny_model, sample_states):
    s = get_sampler("transformers", model=tiny_model)
    prompts = [Prompt(x.context, x.tools) for x in sample_states[:2]]
    a = s.sample(prompts, SamplingParams(n=2, max_tokens=8), seed=7)
    b = s.sample(prompts, SamplingParams(n=2, max_tokens=8), seed=7)
    assert [[x.completion for x in r.samples] for r in a] == [[x.completion for x in r.samples] for r in b]


def test_unknown_backend_and_missing_model():
    with pytest.raises(DataError, match="unknown sampling backend"):
        get_sampler("magic")
    with pytest.raises(DataError, match="cannot load model"):
        get_sampler("transformers", model="/nonexistent/model")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model):
    """A real OpenAI-compatible server (`transformers serve`) on loopback, serving the tiny model."""
    pytest.importorskip("fastapi")
    port = _free_port()
    exe = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(exe), "serve", tiny_model, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start")
        yield url + "/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_backend_against_a_real_local_server(server, tiny_model, sample_states, tmp_path):
    from pivotrl.pivots.profile import profile_states

    s = get_sampler("openai", base_url=server, model=tiny_model, concurrency=2)
    recs = profile_states(sample_states[:3], s, "tool_call", k=2, params=SamplingParams(n=2, max_tokens=8),
                          output=tmp_path / "p.jsonl", keep_samples=True)
    assert [len(r["rewards"]) for r in recs] == [2, 2, 2]
    assert all(r["prompt_tokens"] > 0 for r in recs)
    assert all(isinstance(json.loads(x), dict) for r in recs for x in r["samples"])


def test_openai_backend_says_clearly_when_the_server_is_unreachable():
    s = get_sampler("openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=0, timeout=2)
    with pytest.raises(DataError, match="cannot reach the OpenAI-compatible server"):
        s.sample([Prompt([{"role": "user", "content": "hi"}])], SamplingParams(n=1, max_tokens=4))


def test_shared_prefill_matches_plain_generate_greedy(tiny_model, sample_states):
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:4]]
    greedy = SamplingParams(n=2, temperature=0.0, max_tokens=10)
    shared = get_sampler("transformers", model=tiny_model, batch_size=4).sample(prompts, greedy)
    plain = get_sampler("transformers", model=tiny_model, batch_size=4, share_prefill=False).sample(prompts, greedy)
    assert [[x.completion for x in r.samples] for r in shared] == [[x.completion for x in r.samples] for r in plain]
    assert all(len(set(x.completion for x in r.samples)) == 1 for r in shared)  # greedy: n identical samples


# --- memory the user can bound: the call planner -------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from pivotrl.sampling.transformers_backend import plan_calls  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 9000), max_size=40).map(sorted), st.integers(1, 32), st.integers(1, 16),
       st.integers(1, 200_000))
def test_plan_keeps_every_call_within_the_budget(lengths, n, max_prompts, budget):
    calls = plan_calls(lengths, n, max_prompts, budget)
    assert sorted(i for group, _ in calls for i in group) == list(range(len(lengths)))  # each prompt once
    for group, chunk in calls:
        assert 1 <= chunk <= n and 1 <= len(group) <= max_prompts
        if chunk < n:  # a long prompt sampled in chunks, alone in its calls
            assert len(group) == 1 and (lengths[group[0]] * chunk <= budget or chunk == 1)
        else:
            assert sum(lengths[i] for i in group) * n <= budget or len(group) == 1


def long_prompts(states, words=150):
    """The sample states with a long pasted document in their first message (thousands of tokens)."""
    out = []
    for s in states:
        ctx = [dict(m) for m in s.context]
        ctx[0]["content"] = ctx[0]["content"] + " policy" * words
        out.append(Prompt(ctx, s.tools))
    return out


def test_short_prompts_are_sampled_exactly_as_without_a_budget(tiny_model, sample_states):
    """The default budget leaves the lab's prompt sizes as they were: same calls, same samples."""
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:10]]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=6)
    default = get_sampler("transformers", model=tiny_model).sample(prompts, params, seed=3)
    unbounded = get_sampler("transformers", model=tiny_model, token_budget=10**9).sample(prompts, params, seed=3)
    assert [[x.completion for x in r.samples] for r in default] == [[x.completion for x in r.samples] for r in unbounded]


def test_long_prompts_are_sampled_in_chunks_and_never_fail(tiny_model, sample_states):
    prompts = long_prompts(sample_states[:3])
    tight = get_sampler("transformers", model=tiny_model, token_budget=6000)
    lengths = [r.prompt_tokens for r in tight.sample(prompts, SamplingParams(n=1, max_tokens=1))]
    assert min(lengths) * 16 > 6000  # K=16 at once would pass the budget: samples come 4 at a time
    res = tight.sample(prompts, SamplingParams(n=16, temperature=1.0, max_tokens=4), seed=0)
    assert [len(r.samples) for r in res] == [16, 16, 16] and not any(r.skipped for r in res)
    greedy = SamplingParams(n=4, temperature=0.0, max_tokens=8)
    chunked = tight.sample(prompts, greedy)
    plain = get_sampler("transformers", model=tiny_model, share_prefill=False, token_budget=10**9).sample(prompts, greedy)
    assert [[x.completion for x in r.samples] for r in chunked] == [[x.completion for x in r.samples] for r in plain]


def test_openai_backend_seeds_each_prompt_and_sends_the_template(monkeypatch, tmp_path):
    """Every prompt of a call gets a seed of its own (two identical states are not given the same
    samples), and the chat template and its options go with every request, as vLLM's server takes them."""
    import types

    import openai

    from pivotrl.sampling.openai_backend import OpenAISampler

    sent = []

    class FakeCompletions:
        async def create(self, **kwargs):
            sent.append(kwargs)
            msg = types.SimpleNamespace(content="ok", tool_calls=None)
            return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg, finish_reason="stop")
                                                  for _ in range(kwargs["n"])],
                                         usage=types.SimpleNamespace(prompt_tokens=3, completion_tokens=kwargs["n"]))

    class FakeClient:
        def __init__(self, **_):
            self.chat = types.SimpleNamespace(completions=FakeCompletions())

        async def close(self):
            pass

    monkeypatch.setattr(openai, "AsyncOpenAI", FakeClient)
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    sampler = OpenAISampler(chat_template=str(template), chat_template_kwargs={"enable_thinking": False})
    same = Prompt([{"role": "user", "content": "hi"}])
    results = sampler.sample([same, same, Prompt([{"role": "user", "content": "other"}])], SamplingParams(n=2), seed=7)
    assert [len(r.samples) for r in results] == [2, 2, 2]
    assert len({kw["seed"] for kw in sent}) == 3  # one seed per prompt, identical prompts included
    assert all(kw["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False},
                                    "chat_template": "{{ messages }}", "top_k": -1, "min_p": 0.0,
                                    "repetition_penalty": 1.0} for kw in sent)
    # every sampling field goes with every request, so `vllm serve` never fills one from the model's
    # generation_config (Qwen3's top_k 20 would make the profile sharper than the policy TRL trains)
    sent.clear()
    sampler.sample([same], SamplingParams(n=1, temperature=0.7, top_p=0.9, max_tokens=5, top_k=20, min_p=0.05,
                                          repetition_penalty=1.1))
    kw = sent[0]
    assert (kw["temperature"], kw["top_p"], kw["max_tokens"]) == (0.7, 0.9, 5)
    assert {k: kw["extra_body"][k] for k in ("top_k", "min_p", "repetition_penalty")} == \
        {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
