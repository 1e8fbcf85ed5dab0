"""The GPU check script runs end to end on the CPU at a tiny size (its real run needs a GPU)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_check_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "-o", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["size"] == "tiny" and result["parameters"] > 0
    assert result["greedy"] == {"shared_equals_plain": True, "chunked_equals_plain": True}
    assert all(c["samples"] == c["k"] * len(c["prompt_tokens"]) and c["skipped"] == 0 for c in result["profile"])
    tight, loose = result["profile"][0], result["profile"][-1]
    assert tight["predicted_peak_gb"] <= loose["predicted_peak_gb"]  # a smaller budget plans smaller calls
    assert result["train_full"]["master_dtype"] == "torch.float32" and result["train_full"]["changed_share_q_proj"] > 0.5
    assert result["train_lora"]["lora"] is True


def test_the_gpu_checks_prompts_are_the_lengths_it_says_and_its_wheels_cover_what_pivotrl_needs():
    """Its docstring says 4-8k-token prompts: measured with the tokenizer it builds its model with. Its
    wheel list names every dependency of pivotrl that the device image lacks (TRL, datasets, ...)."""
    import importlib.util
    import re

    from transformers import AutoTokenizer

    from pivotrl.lab import BASE_MODEL
    from pivotrl.sampling.base import render_prompt

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    tok = AutoTokenizer.from_pretrained(BASE_MODEL)
    full = gpu_check.SIZES["full"]
    lengths = [len(tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"])
               for p in gpu_check.long_prompts(full["states"], full["words"])]
    assert 4000 <= min(lengths) and max(lengths) <= 8192, lengths
    wheels = {line.split("==")[0] for line in (ROOT / "bench" / "gpu_check_wheels.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    core = re.findall(r'^    "([a-zA-Z_-]+)', (ROOT / "pyproject.toml").read_text().split("dependencies = [")[1]
                      .split("]")[0], re.M)
    on_the_image = {"torch", "peft", "rich", "typer", "pyyaml", "matplotlib", "pyarrow", "tensorboard"}
    assert set(core) - on_the_image <= wheels, set(core) - on_the_image - wheels


def test_the_vllm_batching_stand_in_runs_our_sampler_and_counts_every_sample(tmp_path):
    """bench/vllm_batching.py drives the real VLLMSampler through profile_states on its simulated
    engine: every state profiled with K samples, one `generate` call per batch of states."""
    out = tmp_path / "vllm_batching.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "vllm_batching.py"), "--states", "40", "--k", "4",
                        "--max-tokens", "64", "-o", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    small, large = result["runs"]
    assert (small["states_per_call"], small["generate_calls"]) == (8, 5)  # 40 states, 8 a call
    assert (large["states_per_call"], large["generate_calls"]) == (256, 1)
    for run in result["runs"]:  # every sample decoded: steps x running sequences >= samples x 1 token
        assert run["engine_steps"] * run["mean_running_sequences"] >= 40 * 4
    assert large["engine_steps"] <= small["engine_steps"]
