"""A user's path, as the README shows it, on a domain this repository does not ship: a calendar
assistant written here (trajectories with parallel calls and clarifying questions, an environment
for episodes), from trajectories to one `compare` table of PivotRL, SFT and E2E RL measured on the
same held-out states and episodes, and `pivotrl eval` of a checkpoint."""

import json
import os
import random
import stat

from typer.testing import CliRunner

from pivotrl.cli import app

runner = CliRunner()
TOOLS = [{"type": "function", "function": {"name": name, "description": desc, "parameters": {
    "type": "object", "properties": props, "required": list(props)}}} for name, desc, props in [
    ("free_slots", "List the free hours of a day.", {"day": {"type": "string"}}),
    ("book", "Book a meeting.", {"day": {"type": "string"}, "hour": {"type": "integer"}, "title": {"type": "string"}}),
    ("invite", "Invite a person to a meeting.", {"title": {"type": "string"}, "person": {"type": "string"}}),
]]
DAYS, PEOPLE = ["monday", "tuesday", "friday"], ["ana", "bo", "chen", "dee"]


class CalendarEnv:
    """Book the meeting at the first free hour of the day and invite everyone asked for."""

    def reset(self, day: str = "monday", busy: list | None = None, title: str = "sync", people: list | None = None,
              **_):
        self.day, self.busy, self.title, self.people = day, set(busy or []), title, set(people or [])
        self.booked, self.invited = None, set()

    def free_slots(self, day: str) -> str:
        """List the free hours of a day.

        Args:
            day: The day.
        """
        return ", ".join(str(h) for h in range(9, 13) if h not in self.busy or day != self.day)

    def book(self, day: str, hour: int, title: str) -> str:
        """Book a meeting.

        Args:
            day: The day.
            hour: The hour.
            title: The meeting's title.
        """
        self.booked = (day, hour, title)
        return "booked"

    def invite(self, title: str, person: str) -> str:
        """Invite a person to a meeting.

        Args:
            title: The meeting's title.
            person: Who to invite.
        """
        self.invited.add(person)
        return "invited"

    def get_reward(self) -> float:
        first = min(h for h in range(9, 13) if h not in self.busy)
        return float(self.booked == (self.day, first, self.title) and self.invited == self.people)


def call(i, name, **args):
    return {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def episode(rng: random.Random, k: int) -> tuple[dict, dict]:
    day, title = rng.choice(DAYS), rng.choice(["sync", "review", "lunch"])
    busy, people = rng.sample(range(9, 12), rng.randint(0, 2)), rng.sample(PEOPLE, rng.randint(1, 3))
    first = min(h for h in range(9, 13) if h not in busy)
    ask = f"Book a {title} on {day} with {' and '.join(people)}."
    msgs = [{"role": "system", "content": "Calendar assistant."}]
    if rng.random() < 0.3:  # a clarifying turn
        msgs += [{"role": "user", "content": f"Book a {title} please."},
                 {"role": "assistant", "content": "Which day, and with whom?"}]
    msgs += [{"role": "user", "content": ask},
             {"role": "assistant", "content": "", "tool_calls": [call(0, "free_slots", day=day)]},
             {"role": "tool", "tool_call_id": "c0", "content": ", ".join(str(h) for h in range(9, 13) if h not in busy)},
             {"role": "assistant", "content": "", "tool_calls": [call(1, "book", day=day, hour=first, title=title)]},
             {"role": "tool", "tool_call_id": "c1", "content": "booked"},
             {"role": "assistant", "content": "", "tool_calls": [call(2 + j, "invite", title=title, person=p)
                                                                 for j, p in enumerate(people)]}]  # parallel calls
    msgs += [{"role": "tool", "tool_call_id": f"c{2 + j}", "content": "invited"} for j in range(len(people))]
    msgs.append({"role": "assistant", "content": f"Booked {title} on {day} at {first}."})
    tid = f"cal-{k}"
    task = {"trajectory_id": tid, "prompt": [msgs[0], {"role": "user", "content": ask}], "day": day, "busy": busy,
            "title": title, "people": people}
    return {"id": tid, "messages": msgs, "tools": TOOLS}, task


def test_trajectories_to_a_compared_checkpoint_on_a_domain_of_our_own(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old_umask = os.umask(0o022)
    try:
        rng = random.Random(0)
        pairs = [episode(rng, k) for k in range(24)]
        (tmp_path / "trajectories.jsonl").write_text("".join(json.dumps(t) + "\n" for t, _ in pairs))
        (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for _, t in pairs))
        _run("extract", "trajectories.jsonl", "-o", "states.jsonl", "--heldout-fraction", "0.25")
        held = set(json.loads((tmp_path / "states.jsonl.heldout.json").read_text())["trajectory_ids"])
        (tmp_path / "heldout_tasks.jsonl").write_text(
            "".join(json.dumps(t) + "\n" for _, t in pairs if t["trajectory_id"] in held))
        heldout_states = tmp_path / "states.jsonl.heldout.states.jsonl"
        n_held_states = len(heldout_states.read_text().splitlines())
        assert n_held_states > len(held)
        _run("profile", "states.jsonl", "--model", tiny_model, "--k", "2", "--max-tokens", "8", "-o", "profile.jsonl")
        _run("select", "profile.jsonl", "-o", "pivots.jsonl", "--rule", "all")
        assert (tmp_path / "pivots.jsonl.heldout.states.jsonl").exists()  # carried beside the pivots
        # artifacts keep the user's umask (not mkstemp's 0600)
        for name in ("states.jsonl", "profile.jsonl", "pivots.jsonl", "profile.jsonl.meta.json"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        episodes = ["--eval_tasks", "heldout_tasks.jsonl", "--eval_environment", f"{__name__}:CalendarEnv",
                    "--eval_max_turns", "2", "--report_to", "none"]
        common = ["--model", tiny_model, "--eval_every", "2", *episodes]
        rl = ["train", "--pivots", "pivots.jsonl", "--output_dir", "rl", "--num_generations", "2", "--prompts_per_step",
              "2", "--learning_rate", "1e-3", *common]
        out = _run(*rl, "--max_steps", "2")
        assert f"evaluating on {n_held_states} states and {len(held)} episodes" in out
        _run("sft", "--trajectories", "trajectories.jsonl", "--heldout", "states.jsonl.heldout.json",
             "--output_dir", "sft", "--per_device_train_batch_size", "2", "--eval_max_tokens", "8", "--max_steps", "2",
             *common)
        _run("e2e", "--tasks", "tasks.jsonl", "--heldout", "states.jsonl.heldout.json", "--environment",
             f"{__name__}:CalendarEnv", "--eval_states", str(heldout_states), "--output_dir", "e2e",
             "--num_generations", "2", "--prompts_per_step", "1", "--max_tool_calling_iterations", "2",
             "--max_completion_length", "48", "--max_steps", "2", *common)
        ledgers = {run: [json.loads(x) for x in (tmp_path / run / "ledger.jsonl").read_text().splitlines()]
                   for run in ("rl", "sft", "e2e")}
        for run, ledger in ledgers.items():  # the same held-out states and episodes, under the same names
            last = [r for r in ledger if r["kind"] == "eval"][-1]
            assert last["eval_states"] == n_held_states and last["eval_episodes"] == len(held), run
            assert 0 <= last["eval_accuracy"] <= 1 and 0 <= last["eval_success"] <= 1
        for metric in ("eval_accuracy", "eval_success"):
            out = _run("compare", "rl", "sft", "e2e", "--metric", metric, "-o", f"{metric}.png")
            assert all(run in out for run in ("rl", "sft", "e2e")) and (tmp_path / f"{metric}.png").exists()
        out = _run("eval", "--model", "rl/final", "--states", str(heldout_states), "--tasks", "heldout_tasks.jsonl",
                   "--environment", f"{__name__}:CalendarEnv", "--max-turns", "2", "--max-tokens", "8",
                   "-o", "eval.json")
        result = json.loads((tmp_path / "eval.json").read_text())
        assert result["eval_states"] == n_held_states and result["eval_episodes"] == len(held)
        # a verifier audited on labelled completions, broken down by the label; message turns paid for any text
        states = [json.loads(x) for x in (tmp_path / "states.jsonl").read_text().splitlines()]
        finals = [st for st in states if st["reference"]["kind"] == "message"]
        pairs = [{"state": st, "completion": "I cannot help with that.", "label": "evasive"} for st in finals]
        pairs += [{"state": st, "completion": st["reference"]["text"], "label": "right"} for st in finals]
        (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
        out = _run("verify", "pairs.jsonl", "-v", "tool_call", "--by", "label")
        assert "by label" in out and "evasive" in out
        out = _run("verify", "pairs.jsonl", "-v", "tool_call", "--by", "label", "-O",
                   'message_check={"name": "string_similarity", "threshold": 0.6}', "-o", "scores.jsonl")
        scores = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
        assert {s["label"]: s["reward"] for s in scores} == {"evasive": 0.0, "right": 1.0}
        # running into a folder that holds a run: refused, resumed, or started over; never deleted silently
        r = runner.invoke(app, [*rl, "--max_steps", "2"])
        assert r.exit_code != 0 and "--resume true" in str(r.exception) and "--overwrite true" in str(r.exception)
        assert any(r["kind"] == "step" for r in _ledger(tmp_path / "rl"))
        _run(*rl, "--max_steps", "3", "--resume", "true", "--save_steps", "1")
        assert [r["step"] for r in _ledger(tmp_path / "rl") if r["kind"] == "step"] == [1, 2, 3]
        _run(*rl, "--max_steps", "1", "--overwrite", "true")
        assert [r["step"] for r in _ledger(tmp_path / "rl") if r["kind"] == "step"] == [1]
    finally:
        os.umask(old_umask)


def _ledger(run):
    return [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]


def _run(*args) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.output
