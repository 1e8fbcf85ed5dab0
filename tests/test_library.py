"""The library stands on its own: nothing in it loads the bundled lab, plugins register verifiers
and environments through entry points, and the pipeline runs without the lab's extra."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pivotrl

ROOT = Path(pivotrl.__file__).parent
LIBRARY = sorted(
    "pivotrl." + ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in ROOT.rglob("*.py") if "lab" not in p.relative_to(ROOT).parts and p.name != "cli.py")
LIBRARY = [m.removesuffix(".__init__") for m in LIBRARY]


def python(code: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_no_library_module_loads_the_lab():
    r = python("import importlib, json, sys\n"
               f"for m in {LIBRARY!r}: importlib.import_module(m)\n"
               "print(json.dumps([k for k in sys.modules if k.startswith('pivotrl.lab') or k in ('bm25s', 'reasoning_gym')]))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(LIBRARY) > 40 and json.loads(r.stdout.splitlines()[-1]) == []
    for module in LIBRARY:  # nor does any of them reach for it later, inside a function
        path = ROOT.joinpath(*module.split(".")[1:])
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        assert "pivotrl.lab" not in source, module


def test_the_cli_mounts_the_lab_without_loading_it():
    r = python("import json, sys, pivotrl.cli\n"
               "print(json.dumps(sorted(k for k in sys.modules if k.startswith('pivotrl.lab'))))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]) == ["pivotrl.lab", "pivotrl.lab.cli"]



def test_no_module_imports_itself_back():
    """No import cycles, lazy imports inside functions included (grimp builds the graph from the
    source): each module's dependencies read top-down, and none is half-initialised at import."""
    import grimp

    graph = grimp.build_graph("pivotrl", cache_dir=None)
    back = [(m, n) for m in sorted(graph.modules) for n in sorted(graph.find_modules_directly_imported_by(m))
            if graph.chain_exists(importer=n, imported=m)]
    assert len(graph.modules) > 60 and back == []

PLUGIN = '''
from pivotrl.rewards import Score


class ShoutVerifier:
    """`shout`: 1 for a completion in capitals (a plugin's verifier)."""

    def score(self, completion, state):
        return Score(float(str(completion).isupper()), "shout")


class CounterEnv:
    def reset(self, start: int = 0, **_):
        self.n = start

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: How much.
        """
        self.n += by
        return str(self.n)

    def get_reward(self) -> float:
        return float(self.n == 3)
'''


def test_a_plugin_package_adds_a_verifier_and_an_environment_by_name(tmp_path):
    (tmp_path / "throwaway_plugin.py").write_text(PLUGIN)
    info = tmp_path / "throwaway_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pivotrl.verifiers]\nshout = throwaway_plugin:ShoutVerifier\n\n"
                                           "[pivotrl.environments]\ncounter = throwaway_plugin:CounterEnv\n")
    r = python("from pivotrl.rewards import get_verifier, list_verifiers\n"
               "from pivotrl.eval.episodes import call_tool, list_environments, load_environment\n"
               "from pivotrl import Action\n"
               "class S: reference, tools, meta = Action.message('x'), [], {}\n"
               "v = get_verifier('shout')\n"
               "env = load_environment('counter')()\n"
               "env.reset(start=1)\n"
               "call_tool(env, 'increment', {'by': 2})\n"
               "print('shout' in list_verifiers(), 'counter' in list_environments(), v.score('HEY', S()).reward,"
               " v.score('hey', S()).reward, env.get_reward())", env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True", "1.0", "0.0", "1.0"]
    r = subprocess.run([sys.executable, "-m", "pivotrl.cli", "verifiers"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert "shout" in r.stdout and "1 for a completion in capitals" in r.stdout


def test_the_pipeline_runs_without_the_lab_extra(tmp_path, tiny_model, sample_path):
    """extract, verify, profile, select and train on the bundled sample, with the lab's dependencies
    unimportable (as after `pip install pivotrl` without `[lab]`)."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("bm25s", "reasoning_gym"):
        (blocked / f"{name}.py").write_text("raise ImportError('not installed: the lab extra is missing')\n")
    rollouts = Path(__file__).parent / "data" / "nemo_gym_rollouts.jsonl"
    steps = [
        ["extract", str(sample_path), "-o", "states.jsonl"],
        ["verify", str(rollouts)],
        ["profile", "states.jsonl", "--model", tiny_model, "--k", "2", "--max-tokens", "4", "-o", "profile.jsonl"],
        ["select", "profile.jsonl", "-o", "pivots.jsonl", "--rule", "all"],
        ["train", "--model", tiny_model, "--pivots", "pivots.jsonl", "--output-dir", "run", "--max_steps", "1",
         "--num_generations", "2", "--prompts_per_step", "2", "--max_completion_length", "4", "--report_to", "none",
         "--eval_fraction", "0"],
    ]
    for args in steps:
        r = subprocess.run([sys.executable, "-m", "pivotrl.cli", *args], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(blocked)})
        assert r.returncode == 0, (args[0], r.stdout[-1500:], r.stderr[-1500:])
    assert (tmp_path / "run" / "final" / "config.json").exists()
    r = subprocess.run([sys.executable, "-m", "pivotrl.cli", "lab", "run", "--preset", "tiny"], capture_output=True,
                       text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(blocked)})
    assert r.returncode == 2 and "pip install 'pivotrl[lab]'" in r.stderr  # a clear error, not a traceback


def test_the_trl_methods_we_override_have_the_signatures_we_wrote_against():
    """pivotrl's trainers override and call parts of TRL's GRPOTrainer that changed before 1.16 (the
    pyproject's lower bound): an older or newer TRL with other signatures fails here, not mid-run."""
    import inspect

    from trl import GRPOTrainer

    from pivotrl.train.group_batches import GroupedGRPOTrainer
    from pivotrl.train.shared_generation import SharedPrefillGRPOTrainer

    for ours, name in ((SharedPrefillGRPOTrainer, "_generate_single_turn"),
                       (GroupedGRPOTrainer, "_get_per_token_logps_and_entropies"),
                       (GroupedGRPOTrainer, "_prepare_inputs")):
        mine = [p.name for p in inspect.signature(getattr(ours, name)).parameters.values() if p.kind != p.VAR_KEYWORD]
        theirs = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
        assert theirs[:len(mine)] == mine, (name, theirs)
    source = inspect.getsource(GRPOTrainer)
    assert all(f"self.{a}" in source for a in ("_dist", "_buffered_inputs", "generation_config", "eos_token_ids",
                                               "use_transformers_continuous_batching", "generation_kwargs"))
