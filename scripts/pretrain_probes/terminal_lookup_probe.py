"""Which line's value does a checkpoint answer after `cat` of a terminal data file? (position bias probe)"""
import sys, random, json, collections
from pivotrl.lab.domains import get_domain
from pivotrl.lab.pretrain import greedy_completions
from pivotrl.data.loaders import normalise_record
model = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
dom = get_domain("terminal")
rng = random.Random(5)
prompts, metas = [], []
for task in dom.tasks("dev", 600, seed=77):
    if task["kind"] != "value": continue
    f = f"data/{task['city']}.txt"
    lines = task["files"][f].splitlines()
    msgs = list(task["prompt"]) + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "run", "arguments": json.dumps({"command": "ls data"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "\n".join(sorted(k.split('/')[1] for k in task["files"]))},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "run", "arguments": json.dumps({"command": f"cat {f}"})}}]},
        {"role": "tool", "tool_call_id": "c2", "content": task["files"][f].rstrip("\n")}]
    prompts.append((msgs, dom.tools())); metas.append((task, lines))
    if len(prompts) >= n: break
texts = greedy_completions(model, prompts, max_new_tokens=24)
pos = collections.Counter()
for (task, lines), t in zip(metas, texts):
    words = t.replace(".", " ").split()
    vals = [l.split("=")[1] for l in lines]
    keys = [l.split("=")[0] for l in lines]
    asked = keys.index(task["key_name"])
    hit = [i for i, v in enumerate(vals) if v in words]
    pos["right" if task["answer"] in words else "wrong"] += 1
    pos[f"asked@{asked}->answered@{hit}"] += 1
print(model, dict(sorted(pos.items())))
for (task, lines), t in list(zip(metas, texts))[:6]: print(task["prompt"][1]["content"], "|", lines, "|", t)
