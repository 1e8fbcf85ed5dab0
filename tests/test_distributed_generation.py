"""Generation on several ranks must not hang: 2 CPU processes (gloo) under the two semantics a GPU
launch gives transformers' `generate`. A rank that would wait for ever fails the test by its
timeout (the launcher's whole process group is killed), never the suite."""

import json
import os
import subprocess
import sys

# Under a ZeRO-3 launch transformers syncs every `generate` (`is_deepspeed_zero3_enabled`), even on the
# gathered copy pivotrl evaluates and re-profiles with, while each rank samples its own share:
# 3 states on 2 ranks with one prompt a call is 2 calls against 1; 1 state leaves a rank none.
ZERO3_WORKER = """
import json, sys
import torch.distributed as dist
import transformers.generation.utils as generation
generation.is_deepspeed_zero3_enabled = lambda: True  # what transformers sees under a ZeRO-3 launch
from transformers import AutoModelForCausalLM, AutoTokenizer
from pivotrl.sampling import Prompt, SamplingParams
from pivotrl.sampling.transformers_backend import TransformersSampler
from pivotrl.train.distributed import gather_lists, my_share

dist.init_process_group("gloo")
path, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(path)  # every parameter whole on each rank, as once gathered
sampler = TransformersSampler(model, tokenizer=AutoTokenizer.from_pretrained(path), batch_size=1)
result = {}
for n in (3, 1):
    prompts = [Prompt([{"role": "user", "content": "question " + "x " * (5 * i)}], []) for i in range(n)]
    mine = my_share(range(n))
    texts = []
    for i in mine:  # one call per state, budgets that differ: ranks decode different numbers of steps
        texts += [s.completion for s in sampler.sample([prompts[i]], SamplingParams(2, 0.0, 1.0, 4 + 3 * i))[0].samples]
    result[n] = len(gather_lists(texts))
json.dump(result, open(f"{out}.{dist.get_rank()}", "w"))
dist.destroy_process_group()
"""

# Under FSDP2 every forward of the sharded module all-gathers its parameters, so ranks must decode in
# step even when one finishes first (unsynced, rank 0 aborts: checked by hand). transformers knows an
# FSDP2 module only by the attribute `fully_shard` sets on the modules it manages; torch 2.13 sets it
# on every one, so transformers 5.25 syncs here by itself (measured), and `generation_must_sync`, which
# reads the parameters, is what holds where a torch or a wrapper does not set it.
FSDP2_WORKER = """
import json, sys
import torch, torch.distributed as dist
from peft import LoraConfig, get_peft_model
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from pivotrl.sampling.transformers_backend import forward_keywords, generate_from_prefill, generation_must_sync
from pivotrl.train.distributed import gather_lists

dist.init_process_group("gloo")
rank, path, out = dist.get_rank(), sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
# LoRA, sharded as accelerate's FSDP2 shards it (the PEFT wrapper at the root, the layers each)
model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=4, task_type="CAUSAL_LM"))
for layer in model.get_base_model().model.layers:
    fully_shard(layer)
fully_shard(model)
ids = tok(["where is my order " * (1 + 4 * rank)], return_tensors="pt")
steps = 4 + 8 * rank  # rank 0 decodes 4 tokens, rank 1 12: rank 0 is done first
def sample(m, synced):  # as SharedPrefillGRPOTrainer generates a group: 2 samples from one prefill
    gen = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, synced_gpus=synced,
               pad_token_id=tok.pad_token_id)
    return generate_from_prefill(m, ids["input_ids"], ids["attention_mask"], 2, gen, *forward_keywords(m)).tolist()
got = sample(model, generation_must_sync(model))
plain = AutoModelForCausalLM.from_pretrained(path)
same = gather_lists([got == sample(plain, generation_must_sync(plain))])
json.dump({"synced": generation_must_sync(model), "plain_synced": generation_must_sync(plain), "same": same},
          open(f"{out}.{rank}", "w"))
dist.destroy_process_group()
"""


def launch(tmp_path, script: str, model: str, timeout: int = 240):
    worker = tmp_path / "worker.py"
    worker.write_text(script)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), model,
           str(tmp_path / "out")]
    log = open(tmp_path / "log.txt", "w")  # a file, not a pipe: a hung rank cannot block the reading of it
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torch's launcher starts each rank in a session of its own: kill the ranks by their script, then it
        subprocess.run(["pkill", "-KILL", "-f", str(worker)])
        proc.kill()
        proc.wait()
        raise AssertionError(f"the ranks hung for {timeout} s") from None
    finally:
        log.close()
    assert proc.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    return [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in (0, 1)]


def test_unequal_and_empty_shares_generate_without_hanging_under_zero3_semantics(tmp_path, tiny_model):
    results = launch(tmp_path, ZERO3_WORKER, tiny_model)
    assert results == [{"3": 6, "1": 2}] * 2  # every state's 2 samples gathered on both ranks


def test_a_sharded_fsdp2_lora_model_decodes_in_step_and_gives_the_unsharded_tokens(tmp_path, tiny_model):
    results = launch(tmp_path, FSDP2_WORKER, tiny_model)
    assert results == [{"synced": True, "plain_synced": False, "same": [True, True]}] * 2
