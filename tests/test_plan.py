"""`pivotrl plan` against hand-computed figures for published architectures (config.json files written
from Qwen3-8B's, Qwen3-30B-A3B-Thinking-2507's and gpt-oss-120b's model cards; no weights), every GPU
command the README ships checked for the hardware it names, and today's non-fitting recipes refused."""

import re
import shlex
from pathlib import Path

import pytest
from transformers import AutoConfig
from typer.testing import CliRunner

from pivotrl.cli import app
from pivotrl.errors import DataError
from pivotrl.train.plan import GiB, VLLM_RUNTIME, count_parameters, lm_head_tile, refusal, step_memory

ROOT = Path(__file__).parent.parent
CONFIGS = Path(__file__).parent / "data" / "model_configs"
MODELS = {"Qwen/Qwen3-8B": CONFIGS / "qwen3-8b", "Qwen/Qwen3-30B-A3B-Thinking-2507": CONFIGS / "qwen3-30b-a3b-thinking-2507"}
runner = CliRunner()


def config(name):
    return AutoConfig.from_pretrained(CONFIGS / name)


def test_parameter_counts_are_the_published_architectures():
    # Qwen3-8B by hand: embeddings and an untied head, 36 layers of attention (q, k, v, o; q/k norms) and SwiGLU
    h, i, L, heads, kv, hd, V = 4096, 12288, 36, 32, 8, 128, 151936
    layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd + 3 * h * i + 2 * h
    assert count_parameters(config("qwen3-8b")) == (2 * V * h + L * layer + h, layer)  # 8,190,735,360
    # Qwen3-30B-A3B: the same attention with 4 key/value heads, a router and 128 experts of 768
    h, L, heads, kv, E, mi = 2048, 48, 32, 4, 128, 768
    layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 2 * hd + h * E + E * 3 * h * mi + 2 * h
    assert count_parameters(config("qwen3-30b-a3b-thinking-2507")) == (2 * V * h + L * layer + h, layer)  # 30.5B
    total, _ = count_parameters(config("gpt-oss-120b"))
    assert abs(total - 116.83e9) / 116.83e9 < 1e-3  # the model card's 116.8B


def hand_plan(P, largest, c, *, devices, sharding, seq, prompt, completion, lora=False, share=0.0, device=79 * GiB,
              max_len=None, rollouts=None, colocated=True):
    """The plan's arithmetic written out again, term by term (the module docstring's rules)."""
    h, L, V = c.hidden_size, c.num_hidden_layers, c.vocab_size
    kv_token = 2 * L * c.num_key_value_heads * c.head_dim * 2
    shard = devices if sharding != "none" else 1
    trainable = L * 7 * 16 * 2 * h if lora else P
    weights = (2 * P / shard + 4 * trainable) if lora else (4 * P / shard + (4 * largest if shard > 1 else 0))
    tokens = seq * (prompt + completion)
    # eager attention (gpt-oss's, for its attention sinks) holds one layer's per-head scores
    scores = seq * c.num_attention_heads * (prompt + completion) ** 2 * 2 if c._attn_implementation == "eager" else 0
    activations = L * h * 2 * tokens + 16 * h * 2 * tokens + scores
    tile_tokens, tile_vocab = lm_head_tile()
    logits = 2 * min(seq * completion, tile_tokens) * min(V, tile_vocab) * 2 + seq * completion * 32
    generation = share * device if colocated and share else (0 if share or not colocated else
                                                             kv_token * (rollouts or seq) * (prompt + completion))
    step = weights + 12 * trainable / shard + activations + logits + generation
    copy = {"zero3": 2 * P, "fsdp": (2 if lora else 4) * P}.get(sharding, 0)
    evaluation = weights + 12 * trainable / shard + copy + kv_token * 8 * (prompt + completion) + \
        (share * device if colocated else 0)
    needs = 2 * P + kv_token * (max_len or c.max_position_embeddings) + VLLM_RUNTIME if share else 0
    return step, evaluation, needs


@pytest.mark.parametrize("name,kw", [
    ("qwen3-8b", dict(devices=8, sharding="zero3", seq=16, prompt=2048, completion=1024, share=0.25, max_len=3072)),
    ("qwen3-8b", dict(devices=1, sharding="none", seq=16, prompt=2048, completion=1024, lora=True, share=0.3)),
    ("qwen3-30b-a3b-thinking-2507", dict(devices=8, sharding="zero3", seq=16, prompt=4096, completion=8192, lora=True,
                                         colocated=False)),
    ("gpt-oss-120b", dict(devices=8, sharding="fsdp", seq=16, prompt=2048, completion=1024, lora=True, share=0.0,
                          colocated=False)),
])
def test_the_plan_is_the_hand_computed_arithmetic(name, kw):
    c = config(name)
    P, largest = count_parameters(c)
    step, evaluation, needs = hand_plan(P, largest, c, **kw)
    mem = step_memory(c, sequences=kw["seq"], prompt_tokens=kw["prompt"], completion_tokens=kw["completion"],
                      devices=kw["devices"], sharding=kw["sharding"], lora=kw.get("lora", False),
                      use_vllm=bool(kw.get("share")) or not kw.get("colocated", True),
                      vllm_mode="colocate" if kw.get("colocated", True) else "server", vllm_share=kw.get("share", 0.0),
                      vllm_max_model_len=kw.get("max_len"), device_bytes=79 * GiB)
    assert mem.total == pytest.approx(step) and mem.evaluation == pytest.approx(evaluation)
    assert mem.vllm_needs == pytest.approx(needs)


def test_trls_chunked_lm_head_never_builds_the_logits():
    """18.6 GiB of float32 logits for 16 x 1,024 completion tokens of Qwen3's vocabulary, had TRL built
    them; its fused head holds one bf16 tile of 4,096 x 32,768 (and one more in the backward)."""
    c = config("qwen3-8b")
    mem = step_memory(c, sequences=16, prompt_tokens=2048, completion_tokens=1024, device_bytes=79 * GiB)
    assert 16 * 1024 * c.vocab_size * 4 * 2 / GiB > 18.5
    assert mem.logits / GiB < 0.6


def readme_gpu_launches():
    """Every `train` command of the README's GPU section and of the training guide: (text, plan flags,
    GPUs, sharding)."""
    section = ROOT.joinpath("README.md").read_text().split("## Your model on one GPU and on eight")[1].split("\n## ")[0]
    section += ROOT.joinpath("docs", "guides", "training.md").read_text()
    commands = re.sub(r"\\\n\s*", " ", section).splitlines()
    out = []
    for line in commands:
        line = line.strip()
        if not re.search(r"pivotrl(\.cli)? train ", line):
            continue
        args = shlex.split(line.split("#")[0])
        devices, sharding = 1, "none"
        if "--config_file" in args:
            accelerate = ROOT / args[args.index("--config_file") + 1]
            devices = int(re.search(r"num_processes: (\d+)", accelerate.read_text()).group(1))
            sharding = "zero3" if "zero3" in accelerate.name else "fsdp"
        flags = args[args.index("train") + 1:]
        for i, flag in enumerate(flags):
            if flag == "--model":
                flags[i + 1] = str(MODELS[flags[i + 1]])
        keep, skip = [], False
        for flag in flags:  # what plan does not take: the data and the output
            if skip:
                skip = False
            elif flag in ("--pivots", "--output-dir", "--vllm_server_host"):
                skip = True
            else:
                keep.append(flag)
        if "--model" not in keep:  # a config's own model: its published architecture
            cfg_file = ROOT / keep[keep.index("--config") + 1]
            model = re.search(r"^model: (\S+)", cfg_file.read_text(), re.M).group(1)
            keep += ["--model", str(MODELS[model])]
        out.append((line, keep, devices, sharding))
    return out


def test_every_gpu_command_of_the_readme_fits_the_hardware_it_names():
    launches = readme_gpu_launches()
    assert len(launches) >= 3  # one GPU, eight GPUs, the thinking model
    for line, flags, devices, sharding in launches:
        r = runner.invoke(app, ["plan", *flags, "--devices", str(devices), "--sharding", sharding, "--device-gib", "79"])
        assert r.exit_code == 0, (line, r.output)


def test_todays_non_fitting_recipes_are_refused_with_the_nearest_that_fits():
    qwen8b, thinking = str(MODELS["Qwen/Qwen3-8B"]), str(MODELS["Qwen/Qwen3-30B-A3B-Thinking-2507"])
    # the 8-GPU recipe as it was: vLLM's 0.2 share cannot hold 15.3 GiB of weights and a 40,960-token cache
    r = runner.invoke(app, ["plan", "--config", "configs/pivotrl.yaml", "--model", qwen8b, "--devices", "8",
                            "--sharding", "zero3", "--gradient_accumulation_steps", "8", "--max_prompt_length", "2048",
                            "--max_completion_length", "1024", "--use_vllm", "true", "--vllm_gpu_memory_utilization",
                            "0.2"], catch_exceptions=False)
    assert r.exit_code == 1 and "max_model_len=40,960" in r.output and "vLLM refuses to start" in r.output
    assert "fits with: --vllm_max_model_length 3072 --vllm_gpu_memory_utilization" in r.output
    # the thinking recipe as it was: full parameters, vLLM colocated at 0.3, no prompt limit
    r = runner.invoke(app, ["plan", "--config", "configs/qwen3-thinking-train.yaml", "--model", thinking, "--devices",
                            "8", "--sharding", "zero3", "--lora", "false", "--group_micro_batches", "false",
                            "--max_prompt_length", "32768", "--vllm_mode", "colocate",
                            "--vllm_gpu_memory_utilization", "0.3"])
    assert r.exit_code == 1 and "a training step holds" in r.output and "evaluation and refresh hold" in r.output
    # the same through `train`'s refusal, as a GPU launch meets it (one line, the fix named)
    from pivotrl.cli import _config_from_cli
    from pivotrl.train.pivotrl_trainer import PivotRLConfig

    cfg = _config_from_cli(PivotRLConfig, ROOT / "configs" / "pivotrl.yaml",
                           ["--model", qwen8b, "--max_prompt_length", "2048", "--max_completion_length", "1024",
                            "--use_vllm", "true", "--vllm_gpu_memory_utilization", "0.2",
                            "--gradient_accumulation_steps", "8"])
    message = refusal(cfg, 8, "zero3", 79 * GiB)
    assert "vLLM refuses to start" in message and "it fits" in message and "\n" not in message
    assert refusal(cfg, 8, "zero3", 200 * GiB) is None


def test_a_launch_that_will_not_fit_is_refused_before_the_model_loads_unless_forced(tmp_path, tiny_model,
                                                                                     sample_states, monkeypatch):
    """On a GPU `train` plans the launch after the profile's budget is filled in (a profile of 8,192
    tokens is planned at 8,192, not the 256 default) and stops before loading the model."""
    import json

    import pivotrl.train.pivotrl_trainer as trainer
    from pivotrl.pivots import write_states
    from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl

    write_states(tmp_path / "pivots.jsonl", sample_states[:4])
    (tmp_path / "pivots.jsonl.meta.json").write_text(json.dumps({"samples": 8, "generation": {"max_tokens": 8192}}))
    planned = []

    def fake_refusal(cfg, prompt_tokens=None):
        planned.append(cfg.max_completion_length)
        return "the step holds 300.0 GiB per GPU"

    monkeypatch.setattr(trainer, "launch_refusal", fake_refusal)
    class Loaded(Exception):
        pass

    def load_policy(*args, **kwargs):
        raise Loaded("the model loaded")

    monkeypatch.setattr(trainer, "load_policy", load_policy)
    cfg = PivotRLConfig(model=tiny_model, pivots=str(tmp_path / "pivots.jsonl"), output_dir=str(tmp_path / "run"),
                        report_to=[], eval_fraction=0)
    with pytest.raises(DataError, match="300.0 GiB .*--force true launches anyway"):
        train_pivotrl(cfg)
    assert planned == [8192]
    cfg.force = True
    with pytest.raises(Loaded):  # past the refusal: on to load the model
        train_pivotrl(cfg)


def test_plan_of_a_hub_id_without_the_network_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["plan", "--model", "nobody/no-such-model-xyz"])
    assert r.exit_code != 0 and isinstance(r.exception, DataError) and "cannot read the config" in str(r.exception)


def test_a_model_whose_evaluation_copy_no_gpu_holds_is_told_to_evaluate_after_training():
    """gpt-oss-120b on 8 x 80 GB, LoRA under FSDP: the step fits (about 60 GiB), but evaluation builds a
    replica of all 117B parameters on each rank; more GPUs do not shrink it."""
    r = runner.invoke(app, ["plan", "--config", "configs/pivotrl.yaml", "--model", str(CONFIGS / "gpt-oss-120b"),
                            "--devices", "8", "--sharding", "fsdp", "--lora", "true", "--group_micro_batches", "true",
                            "--max_prompt_length", "2048", "--max_completion_length", "1024", "--use_vllm", "true",
                            "--vllm_mode", "server"])
    assert r.exit_code == 1 and "evaluation and refresh hold" in r.output and "a training step holds" not in r.output
    assert "fits with: --eval_max_states 0" in r.output
    r = runner.invoke(app, ["plan", "--config", "configs/pivotrl.yaml", "--model", str(CONFIGS / "gpt-oss-120b"),
                            "--devices", "8", "--sharding", "fsdp", "--lora", "true", "--group_micro_batches", "true",
                            "--max_prompt_length", "2048", "--max_completion_length", "1024", "--use_vllm", "true",
                            "--vllm_mode", "server", "--eval_max_states", "0"])
    assert r.exit_code == 0, r.output
