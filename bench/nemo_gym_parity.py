"""Parity with NeMo Gym, measured against its own server code: fuzzed rows, responses and server
configurations scored by NeMo Gym's three pivot servers and by pivotrl's verifiers, compared reward
for reward and failure code for failure code.

    git clone https://github.com/NVIDIA-NeMo/Gym gym        # any checkout; its commit is recorded
    pip install openapi-schema-validator                    # the terminus server validates with it
    python bench/nemo_gym_parity.py --gym gym [--cases 2000] [--seeds 1 2] [-o bench/results/nemo_gym_parity.json]

NeMo Gym's code is read from the checkout, never copied here: `resources_servers/
single_step_tool_use_with_argument_comparison`, `swe_pivot` and `terminus_judge` are imported as
they are, with their `verify()` unchanged. What is replaced is what a verify call does not reach or
needs a running deployment for: the `nemo_gym` server base classes (plain pydantic models with the
same fields; the response is openai's real `Response` type), and the judge model, which both sides
ask through one scripted judge (its reply a deterministic function of the prompt, with labels placed
anywhere, twice, or not at all). A case where the two disagree is written to the output with both
verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Optional

from openai.types.responses import Response
from pydantic import BaseModel, ConfigDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


# ---- the nemo_gym modules a verify() call imports, as plain models -------------------------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def _install_stubs() -> None:
    class BaseResourcesServerConfig(_Open):
        pass

    class BaseRunRequest(_Open):
        responses_create_params: _Open

    class BaseVerifyRequest(BaseRunRequest):
        response: Response

    class BaseVerifyResponse(BaseVerifyRequest):
        reward: float

    class SimpleResourcesServer(_Open):
        config: Any = None
        server_client: Any = None

    class ModelServerRef(_Open):
        type: str = "responses_api_models"
        name: str

    class NeMoGymEasyInputMessage(_Open):
        role: str
        content: Any

    class NeMoGymResponseCreateParamsNonStreaming(_Open):
        input: Any = None

    class JudgeError(Exception):
        pass

    async def call_judge(server_client, *, server_name, url_path, json, response_model):
        msgs = json.input
        system = next((m.content for m in msgs if m.role == "system"), None)
        user = next(m.content for m in msgs if m.role == "user")
        return _response([_message(scripted_judge(system, user))])

    stubs = {
        "nemo_gym": {},
        "nemo_gym.base_resources_server": dict(BaseResourcesServerConfig=BaseResourcesServerConfig,
                                               BaseRunRequest=BaseRunRequest, BaseVerifyRequest=BaseVerifyRequest,
                                               BaseVerifyResponse=BaseVerifyResponse,
                                               SimpleResourcesServer=SimpleResourcesServer),
        "nemo_gym.openai_utils": dict(NeMoGymResponse=Response, NeMoGymEasyInputMessage=NeMoGymEasyInputMessage,
                                      NeMoGymResponseCreateParamsNonStreaming=NeMoGymResponseCreateParamsNonStreaming),
        "nemo_gym.config_types": dict(ModelServerRef=ModelServerRef),
        "nemo_gym.judge": dict(JudgeError=JudgeError, call_judge=call_judge),
    }
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        if name == "nemo_gym":
            mod.__path__ = []
        sys.modules[name] = mod


def scripted_judge(system: Optional[str], user: str) -> str:
    """The judge both sides ask: a reply chosen by a hash of the prompt, its verdict label at the end,
    early (more than 200 characters before the end), twice with the later one deciding, or absent."""
    h = int(hashlib.sha256(f"{system}\x00{user}".encode()).hexdigest(), 16)
    eq, ne = _JUDGE_LABELS
    first, second = (eq, ne) if h % 2 else (ne, eq)
    return [f"Reasoning. Verdict: {first}", f"{first} " + "filler " * 40, f"I think {second} ... no: {first}",
            "I cannot tell.", f"{first}"][(h >> 1) % 5]


_JUDGE_LABELS = ("[[A=B]]", "[[A!=B]]")


def _message(text: str, mid: str = "msg") -> dict:
    return {"type": "message", "role": "assistant", "id": mid, "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _response(output: list) -> Response:
    return Response.model_validate({"id": "resp", "created_at": 0, "model": "policy", "object": "response",
                                    "output": output, "parallel_tool_calls": True, "tool_choice": "auto",
                                    "tools": []})


# ---- fuzzers ---------------------------------------------------------------------------------------
WORDS = ["New York", "new york city", "Oslo", "oslo", "", "the order", "O-17", "O17", "3", "3.0"]
NAMES = ["get_weather", "find_user", "cancel_order"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    return [lambda: rng.choice([0, 1, 2, 3, -1]), lambda: rng.choice([1.0, 2.0000001, 2.5, 1e-7, 3.0]),
            lambda: rng.choice(WORDS), lambda: rng.choice([True, False]), lambda: None,
            lambda: rng.choice(WORDS) + " " + rng.choice(WORDS),
            lambda: [_value(rng, depth + 1) for _ in range(rng.randrange(3))],
            lambda: {rng.choice("abc"): _value(rng, depth + 1) for _ in range(rng.randrange(3))},
            lambda: {"city": rng.choice(WORDS)}][kind]()


def _args(rng: random.Random) -> dict:
    return {rng.choice(["city", "order_id", "user", "n"]): _value(rng) for _ in range(rng.randrange(1, 3))}


def _mutate(rng: random.Random, args: dict) -> Any:
    """A model's arguments: the expected ones, a value changed, a key added or lost, or not JSON at all."""
    out = json.loads(json.dumps(args))
    r = rng.random()
    if r < 0.35:
        return out
    if r < 0.6 and out:
        out[rng.choice(list(out))] = _value(rng)
    elif r < 0.75:
        out[rng.choice(["extra", "city"])] = _value(rng)
    elif r < 0.85 and out:
        out.pop(rng.choice(list(out)))
    else:
        return rng.choice(["{", "null", "[1, 2]", "\"text\"", "{\"a\": NaN}"])
    return out


def _call_item(name: str, args: Any, i: int) -> dict:
    raw = args if isinstance(args, str) else json.dumps(args)
    return {"type": "function_call", "name": name, "arguments": raw, "call_id": f"c{i}", "id": f"fc{i}",
            "status": "completed"}


def tool_call_case(rng: random.Random, parallel: bool) -> tuple[dict, list, dict]:
    r = rng.random()
    if r < 0.15:
        expected = {"type": "message", "content": rng.choice(WORDS)}
        calls = []
    else:
        n = rng.choice([2, 3]) if parallel and r < 0.6 else 1
        calls = [(rng.choice(NAMES), _args(rng)) for _ in range(n)]
        expected = ({"type": "function_call_batch", "calls": [{"type": "function_call", "name": a, "arguments": json.dumps(b)}
                                                               for a, b in calls]}
                    if n > 1 else {"type": "function_call", "name": calls[0][0], "arguments": json.dumps(calls[0][1])})
    output: list = []
    if rng.random() < 0.3:
        output.append({"type": "reasoning", "id": "rs", "summary": []})
    for i, (name, args) in enumerate(calls if rng.random() < 0.8 else []):
        if rng.random() < 0.85:
            output.append(_call_item(name if rng.random() < 0.85 else rng.choice(NAMES), _mutate(rng, args), i))
    if parallel and rng.random() < 0.3:
        output.append(_call_item(rng.choice(NAMES), _args(rng), 9))
    if rng.random() < 0.35 or not output:
        output.append(_message(rng.choice(WORDS + ["I cannot help with that."])))
    rng.shuffle(output)
    config = {"word_count_similarity_threshold": rng.choice([0.0, 0.1, 0.5, 1.0])}
    if parallel:
        config.update(parallel_tool_call_rewarding=True, allow_subset=rng.random() < 0.5,
                      allow_superset=rng.random() < 0.5,
                      parallel_tool_call_reward_mode=rng.choice(["binary_strict", "fractional", "f1"]))
    return {"expected_action": expected}, output, config


SWE_TOOLS = ["str_replace_editor", "bash", "execute_bash", "search", "find_file", "open_file", "view", "grep",
             "create", "submit", "unknown_tool"]
PATHS = ["src/app/models.py", "app/models.py", "tests/test_models.py", "models.py", "src/app/views.py"]
SNIPPETS = ["def f():\n    return 1", "def f():\n    return 2", "x = 1", "", "import os\nprint(os.getcwd())"]


def _swe_args(rng: random.Random, tool: str) -> dict:
    if tool in ("str_replace_editor", "view", "create", "open_file"):
        args: dict = {"command": rng.choice(["view", "str_replace", "create", "insert"]), "path": rng.choice(PATHS)}
        if args["command"] == "view" and rng.random() < 0.6:
            start = rng.randrange(1, 50)
            args["view_range"] = [start, start + rng.randrange(1, 40)]
        if args["command"] == "str_replace":
            args.update(old_str=rng.choice(SNIPPETS), new_str=rng.choice(SNIPPETS))
        if args["command"] == "create":
            args["file_text"] = rng.choice(SNIPPETS)
        return args
    if tool in ("bash", "execute_bash"):
        return {"command": rng.choice(["ls src", "cat src/app/models.py", "python -m pytest tests", "grep -r foo src",
                                       "cd src && ls", "pytest -x tests/test_models.py"])}
    return {rng.choice(["query", "path", "pattern"]): rng.choice(PATHS + ["foo", "def f"])}


def _swe_mutate(rng: random.Random, args: dict) -> Any:
    out = json.loads(json.dumps(args))
    r = rng.random()
    if r < 0.3:
        return out
    if r < 0.5 and "path" in out:
        out["path"] = rng.choice(PATHS)
    elif r < 0.65 and "view_range" in out:
        s = out["view_range"][0] + rng.randrange(-10, 10)
        out["view_range"] = [s, s + rng.randrange(1, 40)]
    elif r < 0.8:
        key = rng.choice([k for k in out] or ["command"])
        value = out.get(key)
        if isinstance(value, str) and value and rng.random() < 0.6:  # a near miss: partial credit
            i = rng.randrange(len(value) + 1)
            out[key] = value[:i] + rng.choice(["x", "  ", "return 3", "\n# note"]) + value[i + rng.randrange(3):]
        else:
            out[key] = rng.choice(SNIPPETS + PATHS + ["ls", "ls -la src"])
    elif r < 0.9:
        out.pop(rng.choice(list(out)), None) if out else None
    else:
        return rng.choice(["{", "null", "\"src\"", "[1]"])
    return out


def swe_case(rng: random.Random, continuous: bool) -> tuple[dict, list, dict]:
    tool = rng.choice(SWE_TOOLS[:-2])
    args = _swe_args(rng, tool)
    expected = {"type": "function_call", "name": tool, "arguments": json.dumps(args)}
    output: list = []
    r = rng.random()
    if r < 0.8:
        name = tool if rng.random() < 0.6 else rng.choice(SWE_TOOLS)
        output.append(_call_item(name, _swe_mutate(rng, args) if name == tool else _swe_args(rng, name), 0))
        if rng.random() < 0.15:
            output.append(_call_item(rng.choice(SWE_TOOLS), _swe_args(rng, "bash"), 1))
    elif r < 0.9:
        output.append(_message(rng.choice(["done", json.dumps(args)])))
    config = {"reward_mode": "continuous" if continuous else "binary"}
    if rng.random() < 0.5:
        config.update(similarity_threshold=rng.choice([0.2, 0.4, 0.6]), similarity_full_credit=rng.choice([0.7, 0.8, 0.95]),
                      enable_target_match=rng.random() < 0.85, enable_argument_similarity=rng.random() < 0.85,
                      enable_diff_size_shaping=rng.random() < 0.8, diff_size_alpha=rng.choice([0.0, 0.1, 0.3]))
    return {"expected_action": expected, "agent_ref": {"type": "responses_api_agents",
                                                       "name": "swe_pivot_tool_simulation_agent"}}, output, config


def _terminus_answer(rng: random.Random, harness: str) -> dict:
    keys = [rng.choice(["ls -la\n", "cd /app\n", "cat notes.txt\n", "C-c", "python run.py\n", ""]) for _ in range(rng.randrange(0, 3))]
    if harness == "terminus_1":
        return {"state_analysis": "s", "explanation": "e", "is_task_complete": rng.random() < 0.3,
                "commands": [{"keystrokes": k, "is_blocking": rng.random() < 0.5, "timeout_sec": rng.choice([1, 2.5])} for k in keys]}
    out = {"analysis": "a", "plan": "p", "commands": [{"keystrokes": k, "duration": rng.choice([0.1, 1.0])} for k in keys]}
    if rng.random() < 0.5:
        out["task_complete"] = rng.random() < 0.4
    return out


def _terminus_mutate(rng: random.Random, answer: dict) -> str:
    out = json.loads(json.dumps(answer))
    r = rng.random()
    if r < 0.3:
        pass
    elif r < 0.55 and out["commands"]:
        out["commands"][rng.randrange(len(out["commands"]))]["keystrokes"] = rng.choice(["ls -l\n", "cd /tmp\n", "cat note.txt\n"])
    elif r < 0.65:
        for flag in ("task_complete", "is_task_complete"):
            if flag in out:
                out[flag] = not out[flag]
    elif r < 0.75:
        out["extra"] = 1
    elif r < 0.85:
        out.pop(rng.choice(list(out)))
    else:
        return rng.choice(["not json", "{", "[]", "null", ""])
    text = json.dumps(out)
    return rng.choice([text, "<think>plan</think>" + text, "thinking...</think>\n" + text, text])


def terminus_case(rng: random.Random, mode: str) -> tuple[dict, list, dict]:
    harness = rng.choice(["terminus_1", "terminus_2"])
    answer = _terminus_answer(rng, harness)
    row: dict = {"metadata": {"harness": rng.choice([harness] * 9 + ["terminus_3"])}}
    reference = json.dumps(answer) if rng.random() < 0.95 else rng.choice(["not json", "{}", json.dumps({"commands": 1})])
    if rng.random() < 0.5:
        row["expected_answer"] = reference
    else:
        row["metadata"]["expected_answer"] = reference
    if rng.random() < 0.2:
        row["threshold"] = rng.choice([0.5, 0.8, 1.0])
    parts = [_terminus_mutate(rng, answer)] + ([rng.choice(["ok", json.dumps(answer)])] if rng.random() < 0.15 else [])
    output = [_message(p, f"m{i}") for i, p in enumerate(parts)] if rng.random() < 0.95 else []
    config: dict = {"enable_string_similarity": mode in ("similarity", "similarity+judge"),
                    "enable_llm_judge": mode in ("judge", "similarity+judge"),
                    "string_similarity_threshold": rng.choice([0.5, 0.9, 0.95])}
    if config["enable_llm_judge"]:
        config.update(check_twice_swap=rng.random() < 0.5, reward_if_swap_fails=rng.choice([0.0, -1.0]),
                      judge_system_message=rng.choice([None, "You compare terminal commands."]))
    return row, output, config


# ---- the two sides ---------------------------------------------------------------------------------
class Gym:
    """NeMo Gym's three servers, imported from a checkout."""

    def __init__(self, path: Path):
        _install_stubs()
        sys.path.insert(0, str(path))
        from resources_servers.single_step_tool_use_with_argument_comparison import app as tool
        from resources_servers.swe_pivot import app as swe
        from resources_servers.terminus_judge import app as terminus

        self.tool, self.swe, self.terminus = tool, swe, terminus
        self.template = path / "resources_servers" / "terminus_judge" / "prompt_templates" / "terminus_prompt.txt"

    def score(self, verifier: str, row: dict, output: list, config: dict) -> tuple[float, str]:
        body = {"responses_create_params": {"input": [{"role": "user", "content": "go"}]}, **row,
                "response": _response(output)}
        if verifier == "tool_call":
            m = self.tool
            cfg = m.SingleStepToolUseArgumentComparisonResourcesServerConfig(
                tool_call_comparator_config=m.ToolCallComparatorConfig(**config))
            server = m.SingleStepToolUseArgumentComparisonResourcesServer(config=cfg)
            res = asyncio.run(server.verify(m.SingleStepToolUseArgumentComparisonVerifyRequest(**body)))
            return res.reward, res.category.name
        if verifier == "swe_pivot":
            m = self.swe
            server = m.SwePivotResourcesServer(config=m.SwePivotResourcesServerConfig(**config))
            res = asyncio.run(server.verify(m.SwePivotVerifyRequest(**body)))
            return res.reward, getattr(res.failure_reason, "value", str(res.failure_reason))
        m = self.terminus
        extra = {}
        if config.get("enable_llm_judge"):
            extra = {"judge_model_server": {"name": "judge"}, "judge_responses_create_params": {"input": []},
                     "judge_prompt_template_fpath": str(self.template)}
        server = m.TerminusJudgeResourcesServer(config=m.TerminusJudgeResourcesServerConfig(**config, **extra))
        res = asyncio.run(server.verify(m.TerminusJudgeVerifyRequest(**body)))
        return res.reward, getattr(res.failure_reason, "value", str(res.failure_reason))


def ours(verifier: str, row: dict, output: list, config: dict, template: Path) -> tuple[float, str]:
    from pivotrl.pivots.gym import gym_row_to_state
    from pivotrl.rewards import get_verifier

    state = gym_row_to_state({"responses_create_params": {"input": [{"role": "user", "content": "go"}]}, **row})
    options = dict(config)
    if verifier == "terminus":
        judge = options.pop("enable_llm_judge", False)
        if judge:
            options.update(judge=_our_judge, judge_prompt_template_fpath=str(template))
    score = get_verifier(verifier, **options).score(output, state)
    return score.reward, score.reason


def _our_judge(prompt) -> str:
    if isinstance(prompt, list):
        system = next((m["content"] for m in prompt if m["role"] == "system"), None)
        return scripted_judge(system, next(m["content"] for m in prompt if m["role"] == "user"))
    return scripted_judge(None, prompt)


MODES = [("tool_call", "default (call count not judged)", lambda rng: tool_call_case(rng, False)),
         ("tool_call", "parallel rewarding (subset/superset, binary_strict/fractional/f1)", lambda rng: tool_call_case(rng, True)),
         ("swe_pivot", "binary", lambda rng: swe_case(rng, False)),
         ("swe_pivot", "continuous (partial credit, diff-size shaping)", lambda rng: swe_case(rng, True)),
         ("terminus", "string similarity only", lambda rng: terminus_case(rng, "similarity")),
         ("terminus", "similarity, then judge (once or swapped, system message, -1.0 swap penalty)",
          lambda rng: terminus_case(rng, "similarity+judge")),
         ("terminus", "judge only", lambda rng: terminus_case(rng, "judge")),
         ("terminus", "neither (schema and completion flag)", lambda rng: terminus_case(rng, "neither"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gym", type=Path, required=True, help="A NeMo Gym checkout (github.com/NVIDIA-NeMo/Gym).")
    ap.add_argument("--cases", type=int, default=2000, help="Cases per mode and seed.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-o", "--output", type=Path, default=Path("bench/results/nemo_gym_parity.json"))
    args = ap.parse_args()
    gym = Gym(args.gym.resolve())
    commit = subprocess.run(["git", "-C", str(args.gym), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows, disagreements = [], []
    for verifier, mode, make in MODES:
        entry = {"verifier": verifier, "mode": mode, "cases": 0, "rewards_agree": 0, "codes_agree": 0,
                 "outcomes": {}}  # NeMo Gym's (code, reward) counts: which paths the fuzzing reached
        for seed in args.seeds:
            rng = random.Random(f"{verifier}:{mode}:{seed}")
            for i in range(args.cases):
                row, output, config = make(rng)
                theirs = gym.score(verifier, row, output, config)
                mine = ours(verifier, row, output, config, gym.template)
                entry["cases"] += 1
                outcome = f"{theirs[1]} {theirs[0]:g}"
                entry["outcomes"][outcome] = entry["outcomes"].get(outcome, 0) + 1
                same_reward, same_code = abs(theirs[0] - mine[0]) < 1e-9, _same_code(verifier, theirs[1], mine[1])
                entry["rewards_agree"] += same_reward
                entry["codes_agree"] += same_code
                if not (same_reward and same_code):
                    if len(disagreements) < 50:
                        disagreements.append({"verifier": verifier, "mode": mode, "seed": seed, "case": i, "row": row,
                                              "output": output, "config": config, "nemo_gym": theirs, "pivotrl": mine})
        rows.append(entry)
        print(f"{verifier:10s} {mode[:60]:60s} {entry['cases']:6d} cases  rewards {entry['rewards_agree'] / entry['cases']:.2%}"
              f"  codes {entry['codes_agree'] / entry['cases']:.2%}", flush=True)
    published = published_rollouts(args.gym)
    print(f"NeMo Gym's published example rollouts: {published['agree']} of {published['rollouts']} rewarded as recorded")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"gym_commit": commit, "seeds": args.seeds, "cases_per_mode_and_seed": args.cases,
                                       "modes": rows, "published_rollouts": published, "disagreements": disagreements},
                                      indent=1, default=str) + "\n")


def published_rollouts(gym: Path) -> dict:
    """The servers' own example rollouts (`data/example_rollouts.jsonl`): pivotrl's reward, routed by
    `dispatch` (terminus string-only, as `pivotrl verify` does), against the reward each row records."""
    from pivotrl.pivots.gym import gym_row_to_state
    from pivotrl.rewards import get_verifier

    verifier = get_verifier("dispatch")
    out = {"rollouts": 0, "agree": 0, "by_server": {}}
    for server in ("single_step_tool_use_with_argument_comparison", "swe_pivot", "terminus_judge"):
        path = gym / "resources_servers" / server / "data" / "example_rollouts.jsonl"
        n = agree = 0
        for line in path.read_text().splitlines() if path.exists() else []:
            row = json.loads(line)
            reward = verifier.score(row["response"]["output"], gym_row_to_state(row)).reward
            n, agree = n + 1, agree + (abs(reward - float(row["reward"])) < 1e-9)
        out["by_server"][server] = {"rollouts": n, "agree": agree}
        out["rollouts"], out["agree"] = out["rollouts"] + n, out["agree"] + agree
    return out


def _same_code(verifier: str, theirs: str, mine: str) -> bool:
    """The two name the outcome alike: `tool_call`'s reasons are NeMo Gym's `StepRewardCategory`
    names in lower case; `swe_pivot`'s and `terminus`'s are its `failure_reason` values."""
    return (theirs.lower() if verifier == "tool_call" else theirs) == mine


if __name__ == "__main__":
    main()
