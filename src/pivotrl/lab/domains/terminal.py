"""`terminal`: shell work in a real temporary directory (like Terminal-Bench).

The task directory holds generated data files; the agent runs commands through a restricted real
shell (`run`) and answers, or leaves the directory in the asked state. Success: the answer value
is the one value of the final message (`answers_with`), or the file asked for holds the asked content.
"""

from __future__ import annotations

import json
import random
import re

from pivotrl import sandbox
from pivotrl.errors import DataError
from pivotrl.lab.domains.base import Domain, pick, register_domain, run_expert, task_of, tool_history
from pivotrl.lab.restricted_shell import RestrictedShell

CITIES = ["oslo", "lima", "pune", "kyiv", "baku", "nice", "bern", "doha", "riga", "suva", "apia", "male", "lome",
          "rome", "graz", "cork"]
KEYS = ["temp", "rain", "wind", "snow"]
WORDS = ["alpha", "delta", "gamma", "omega", "sigma", "kappa"]
SYSTEM = "Shell agent in a task folder. Use run to execute commands, then answer."


class TerminalEnv:
    def reset(self, files: dict | None = None, kind: str = "value", answer: str = "", target: str = "",
              content: str = "", **_):
        sandbox.require_sandbox()  # refuse at set-up, not on the agent's first command
        self._cleanup()
        self.dir = sandbox.new_task_folder("pivotrl-term-")
        sandbox.write_files(self.dir, files or {})  # a task's paths are data: kept inside the folder
        self.shell = RestrictedShell(self.dir)
        self.kind, self.answer, self.target, self.content = kind, answer, target, content
        return None

    def run(self, command: str) -> str:
        """Run a shell command in the task folder.

        Args:
            command: The command line.
        """
        return self.shell.run(command)

    def _state(self):
        """What an action can change: the folder's files, folders and links, hidden ones too (compared
        by the lab's verifier)."""
        return sandbox.snapshot(self.dir)

    def get_reward(self) -> float:
        if self.kind == "create":
            try:  # the target is data: a path that leads out of the folder is no file of the task's
                data = sandbox.read_regular(sandbox.task_path(self.dir, self.target))  # never follows a link
            except DataError:
                data = None
            ok = data is not None and data.decode("utf-8", errors="replace").strip() == self.content
        else:
            ok = answers_with(getattr(self, "final_message", "") or "", self.answer)
        return 1.0 if ok else 0.0

    def _cleanup(self):
        if getattr(self, "dir", None):
            sandbox.remove_tree(self.dir)

    def __del__(self):
        self._cleanup()


def answers_with(message: str, answer: str) -> bool:
    """The final message gives `answer` as its one value: the answer is one of its words and every
    number in it is the answer ("The temp is 17.", "17"), so a message that lists candidates ("0 1 2
    ... 40") is paid nothing. The answers are whole numbers (a value, a count)."""
    return answer in message.replace(".", " ").split() and set(re.findall(r"\d+", message)) == {answer}


def _sample(rng: random.Random) -> dict:
    cities = rng.sample(CITIES, rng.randint(3, 5))
    files = {f"data/{c}.txt": "".join(f"{k}={rng.randint(0, 40)}\n" for k in rng.sample(KEYS, 3)) for c in cities}
    kind = rng.choice(["value", "count", "create"])
    task = {"files": files, "kind": kind}
    if kind == "value":
        city = rng.choice(cities)
        line = rng.choice(files[f"data/{city}.txt"].splitlines())
        key, value = line.split("=")
        task.update(answer=value, city=city, key_name=key)
        ask = rng.choice([f"What is the {key} value for {city}?", f"Find the {key} of {city} in data."])
    elif kind == "count":
        task.update(answer=str(len(cities)))
        ask = rng.choice(["How many files are in data?", "Count the files in the data folder."])
    else:
        word = rng.choice(WORDS)
        task.update(target="done.txt", content=word)
        ask = rng.choice([f"Create done.txt containing {word}.", f"Write {word} into a new file done.txt."])
    task["prompt"] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]
    task["key"] = json.dumps([files, kind, task.get("answer"), task.get("content"), task.get("key_name")])
    return task


def shows_fact(output: str, fact: str) -> bool:
    """Whether a command's output shows the line `key=value` (alone, or after grep -n's `N:`)."""
    return any(line == fact or (line.endswith(":" + fact) and line.split(":")[0].isdigit())
               for line in output.splitlines())


def terminal_policy(task: dict, messages: list, rng: random.Random | None) -> tuple:
    """The shell expert, from what the commands printed: list the data, read the asked file and
    answer; count the files; write the file, read it back, report."""
    seen = [(args.get("command", ""), out) for _, args, out in tool_history(messages)]
    if task["kind"] == "value":
        fact = f"{task['key_name']}={task['answer']}"
        if any(shows_fact(out, fact) for _, out in seen):  # the value read from a command's output
            return "say", pick(rng, [f"The {task['key_name']} is {task['answer']}.", f"{task['answer']}",
                                     f"It is {task['answer']}."])
        f = f"data/{task['city']}.txt"
        if not any(f"{task['city']}.txt" in out.split() for _, out in seen):
            return "call", ("run", {"command": pick(rng, ["ls data", "ls -1 data", "ls data/"])})
        return "call", ("run", {"command": pick(rng, [f"cat {f}", f"grep {task['key_name']} {f}",
                                                      f"grep -n {task['key_name']} {f}"])})
    if task["kind"] == "count":
        counts = [out.strip() for cmd, out in seen if "wc" in cmd and out.strip().isdigit()]
        if not counts:
            return "call", ("run", {"command": pick(rng, ["ls data | wc -l", "ls -1 data | wc -l", "ls data/ | wc -l"])})
        return "say", pick(rng, [f"There are {counts[-1]} files.", f"{counts[-1]} files."])
    target, content = task["target"], task["content"]
    if seen and seen[-1][1].strip() == content and target in seen[-1][0] and ">" not in seen[-1][0]:
        return "say", pick(rng, [f"Created {target}.", "Done."])
    if seen and ">" in seen[-1][0] and target in seen[-1][0]:
        return "call", ("run", {"command": f"cat {target}"})
    return "call", ("run", {"command": pick(rng, [f"echo {content} > {target}", f"echo '{content}' > {target}"])})


def _expert(task: dict, rng: random.Random) -> dict:
    return run_expert(DOMAIN, task, terminal_policy, rng=rng)


def terminal_tag(state) -> str:
    """Decision: answer with one value among several `key=value` lines the last command printed;
    the rest copies (file names from the question, a count, the content to write)."""
    if state.reference.kind == "message" and task_of(state).get("kind") == "value":
        outputs = [out for _, _, out in tool_history(state.context)]
        if outputs and sum("=" in line for line in outputs[-1].splitlines()) > 1:
            return "decision"
    return "copy"


DOMAIN = register_domain(Domain("terminal", TerminalEnv, _sample, _expert, verifier="lab_terminal",
                                policy=terminal_policy, tag=terminal_tag,
                                description="shell commands in a real folder through a restricted shell "
                                            "(like Terminal-Bench)"))
