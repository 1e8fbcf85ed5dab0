"""The vLLM backend's wiring, against a stand-in `vllm` module that behaves as vLLM's documented
offline API does (it has not run on a real GPU here): token-id prompts, per-prompt seeds, greedy
requests, engine options, LoRA checkpoints. Plus the Ray pool's GPU placement rules."""

import json
import random
import sys
import types
from importlib import metadata

import pytest
from transformers import AutoTokenizer

from pivotrl.errors import DataError
from pivotrl.sampling import Prompt, SamplingParams, get_sampler
from pivotrl.sampling.base import render_prompt
from pivotrl.sampling.ray_pool import gpus_for_workers, runtime_env, worker_options


class FakeSamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, stop=None, seed=None, top_k=0, min_p=0.0,
                 repetition_penalty=1.0):  # vLLM's own names for these fields
        if temperature < 1e-5 and n > 1:  # as vLLM's SamplingParams does
            raise ValueError(f"n must be 1 when using greedy sampling, got {n}.")
        self.n, self.temperature, self.top_p, self.max_tokens, self.stop, self.seed = n, temperature, top_p, max_tokens, stop, seed
        self.top_k, self.min_p, self.repetition_penalty = top_k, min_p, repetition_penalty


class FakeLLM:
    """Sample i of a request is drawn from seed + i, as vLLM seeds a request's child sequences."""

    last = None

    def __init__(self, model, **engine):
        self.model, self.engine, self.calls = model, engine, []
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=2048))
        FakeLLM.last = self

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, sampling_params, lora_request))
        outs = []
        for p, sp in zip(prompts, sampling_params):
            assert set(p) == {"prompt_token_ids"}  # a TokensPrompt: token ids, not text
            texts = []
            for i in range(sp.n):
                rng = random.Random(None if sp.seed is None else sp.seed + i)
                texts.append("".join(rng.choice("abcdefgh") for _ in range(6)))
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=t, token_ids=[0] * 6, finish_reason="stop")
                                                       for t in texts]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, int_id, path: types.SimpleNamespace(name=name, id=int_id, path=path)
    for name, mod in {"vllm": vllm, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return FakeLLM


def test_prompts_go_in_as_the_token_ids_the_transformers_backend_uses(fake_vllm, tiny_model, sample_states):
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:3]]
    sampler = get_sampler("vllm", model=tiny_model, chat_template_kwargs={"enable_thinking": False})
    res = sampler.sample(prompts, SamplingParams(n=2, max_tokens=8), seed=1)
    sent, _, _ = fake_vllm.last.calls[-1]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for p, req, r in zip(prompts, sent, res):
        assert req["prompt_token_ids"] == tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]
        assert r.prompt_tokens == len(req["prompt_token_ids"]) and len(r.samples) == 2


def test_two_identical_states_get_their_own_samples(fake_vllm, tiny_model, sample_states):
    same = Prompt(sample_states[0].context, sample_states[0].tools)
    sampler = get_sampler("vllm", model=tiny_model)
    a, b = sampler.sample([same, same], SamplingParams(n=4, max_tokens=8), seed=7)
    assert [s.completion for s in a.samples] != [s.completion for s in b.samples]
    again = sampler.sample([same, same], SamplingParams(n=4, max_tokens=8), seed=7)
    assert [s.completion for s in again[0].samples] == [s.completion for s in a.samples]  # reproducible


def test_greedy_with_k_samples_asks_vllm_for_one(fake_vllm, tiny_model, sample_states):
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:2]]
    res = get_sampler("vllm", model=tiny_model).sample(prompts, SamplingParams(n=4, temperature=0.0, max_tokens=8))
    _, params, _ = fake_vllm.last.calls[-1]
    assert all(p.n == 1 and p.temperature == 0.0 for p in params)
    assert all(len(r.samples) == 4 and len({s.completion for s in r.samples}) == 1 for r in res)


def test_every_sampling_field_is_set_explicitly(fake_vllm, tiny_model, sample_states):
    """vLLM fills unset fields from the model's generation_config in some paths (Qwen3: top_k 20); TRL
    trains with top_k off, so each request says so (-1: off)."""
    prompts = [Prompt(s.context, s.tools) for s in sample_states[:1]]
    sampler = get_sampler("vllm", model=tiny_model)
    sampler.sample(prompts, SamplingParams(n=2, max_tokens=8))
    _, params, _ = fake_vllm.last.calls[-1]
    assert [(p.top_k, p.min_p, p.repetition_penalty) for p in params] == [(-1, 0.0, 1.0)]
    sampler.sample(prompts, SamplingParams(n=2, max_tokens=8, top_k=20, min_p=0.05, repetition_penalty=1.1))
    _, params, _ = fake_vllm.last.calls[-1]
    assert [(p.top_k, p.min_p, p.repetition_penalty) for p in params] == [(20, 0.05, 1.1)]


def test_engine_options_reach_the_engine(fake_vllm, tiny_model):
    get_sampler("vllm", model=tiny_model, tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096,
                enforce_eager=True, max_num_seqs=64)
    engine = fake_vllm.last.engine
    assert engine["tensor_parallel_size"] == 2 and engine["gpu_memory_utilization"] == 0.5
    assert engine["max_model_len"] == 4096 and engine["enforce_eager"] is True and engine["max_num_seqs"] == 64
    assert engine["enable_prefix_caching"] is True


def test_a_lora_checkpoint_is_profiled_as_base_plus_adapter(fake_vllm, tiny_model, sample_states, tmp_path):
    adapter = tmp_path / "checkpoint-50"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": tiny_model, "r": 8}))
    sampler = get_sampler("vllm", model=str(adapter))
    assert fake_vllm.last.model == tiny_model and fake_vllm.last.engine["enable_lora"] is True
    sampler.sample([Prompt(sample_states[0].context, sample_states[0].tools)], SamplingParams(n=1, max_tokens=4))
    _, _, lora = fake_vllm.last.calls[-1]
    assert lora.path == str(adapter)


def test_the_vllm_extra_is_the_range_trl_supports():
    import tomllib
    from pathlib import Path

    ours = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    ours = ours["project"]["optional-dependencies"]["vllm"]
    trl = [r.split(";")[0].strip() for r in metadata.requires("trl") if r.startswith("vllm") and "extra == \"vllm\"" in r]
    assert trl and sorted(s.replace(" ", "") for s in trl[0][4:].split(",")) == \
        sorted(s.replace(" ", "") for s in ours[0][4:].split(","))


# --- Ray placement --------------------------------------------------------------------------------
def test_ray_gpu_placement():
    assert gpus_for_workers("vllm", {"tensor_parallel_size": 2}, None, 8, 4) == 2
    with pytest.raises(DataError, match="whole GPUs"):
        gpus_for_workers("vllm", {}, 0.5, 8, 2)
    with pytest.raises(DataError, match="whole GPUs"):
        gpus_for_workers("vllm", {"tensor_parallel_size": 2}, 1, 8, 2)
    with pytest.raises(DataError, match="need 6 GPUs"):
        gpus_for_workers("vllm", {"tensor_parallel_size": 2}, None, 4, 3)
    assert gpus_for_workers("transformers", {}, None, 0, 2) == 0  # a CPU cluster
    assert gpus_for_workers("transformers", {}, None, 8, 8) == 1  # one GPU each, not all on GPU 0
    assert gpus_for_workers("transformers", {}, 0.5, 1, 2) == 0.5
    assert gpus_for_workers("openai", {}, None, 8, 2) == 0


def test_a_tensor_parallel_engine_in_an_actor_runs_its_shards_as_its_own_processes(fake_vllm, tiny_model):
    opts = worker_options("vllm", {"model": tiny_model, "tensor_parallel_size": 2})
    assert opts["distributed_executor_backend"] == "mp"
    get_sampler("vllm", **opts)
    assert fake_vllm.last.engine["distributed_executor_backend"] == "mp"  # reaches the engine
    assert worker_options("vllm", {"tensor_parallel_size": 2, "distributed_executor_backend": "ray"}) == \
        {"tensor_parallel_size": 2, "distributed_executor_backend": "ray"}  # the user's choice stands
    assert "distributed_executor_backend" not in worker_options("vllm", {"tensor_parallel_size": 1})
    assert "distributed_executor_backend" not in worker_options("transformers", {"tensor_parallel_size": 2})


def test_the_package_travels_to_a_remote_cluster():
    import pivotrl

    assert "py_modules" not in runtime_env(None)
    from pathlib import Path

    assert runtime_env("ray://head:10001")["py_modules"] == [str(Path(pivotrl.__file__).resolve().parent)]
