"""A run killed while it saves a checkpoint resumes from the newest complete one: the torn one is
moved aside and named, training ends exactly at max_steps, and the final weights are the
uninterrupted run's. PivotRL and SFT, torn by hand and by a real SIGKILL in the middle of a save."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pivotrl.errors import DataError
from pivotrl.pivots import write_states
from pivotrl.train.checkpoints import TORN_FOLDER, checkpoint_problem, resume_checkpoint
from pivotrl.train.ledger import read_ledger
from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl
from pivotrl.train.sft import SFTRunConfig, train_sft

TESTS = Path(__file__).parent


def prefers_vowel(completion, state):
    text = completion if isinstance(completion, str) else json.dumps(completion)
    return 1.0 if text.strip()[:1].lower() in "aeiou" else 0.0


def pivotrl_config(model, out, **kw):
    return PivotRLConfig(model=model, output_dir=str(out), verifier=f"{__name__}:prefers_vowel", num_generations=8,
                         prompts_per_step=2, max_completion_length=4, learning_rate=3e-2, eval_every=0, max_steps=4,
                         save_steps=2, report_to=[], seed=0, score_truncated=True, **kw)


def sft_config(model, trajectories, out, **kw):
    return SFTRunConfig(model=model, trajectories=str(trajectories), output_dir=str(out), max_steps=4, save_steps=2,
                        per_device_train_batch_size=2, learning_rate=1e-3, eval_every=0, report_to=[], seed=0, **kw)


def final_weights(run):
    return load_file(str(Path(run) / "final" / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) == 0.0


def steps(run):
    return [r["step"] for r in read_ledger(run) if r["kind"] == "step"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, sample_states, tmp_path_factory):
    """One PivotRL run of 4 steps with checkpoints at 2 and 4, and its final weights."""
    run = tmp_path_factory.mktemp("whole") / "run"
    train_pivotrl(pivotrl_config(tiny_model, run), train_states=sample_states[:6], eval_states=[])
    return run


def tear(ckpt: Path, how: str) -> None:
    if how == "no trainer state":
        (ckpt / "trainer_state.json").unlink()
    elif how == "truncated weights":
        data = (ckpt / "model.safetensors").read_bytes()
        (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "truncated optimizer":
        data = (ckpt / "optimizer.pt").read_bytes()
        (ckpt / "optimizer.pt").write_bytes(data[: len(data) - 100])
    elif how == "empty folder":
        shutil.rmtree(ckpt)
        ckpt.mkdir()
    elif how == "no rng state":
        for p in ckpt.glob("rng_state*.pth"):
            p.unlink()


TORN = ["no trainer state", "truncated weights", "truncated optimizer", "empty folder", "no rng state"]


@pytest.mark.parametrize("how", TORN)
def test_a_torn_newest_checkpoint_is_skipped_named_and_moved_aside(tmp_path, tiny_model, sample_states,
                                                                  uninterrupted, how, capsys):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "final")
    tear(run / "checkpoint-4", how)
    assert checkpoint_problem(run / "checkpoint-4") is not None
    result = train_pivotrl(pivotrl_config(tiny_model, run, resume=True), train_states=sample_states[:6], eval_states=[])
    out = capsys.readouterr().out
    assert "resume: skipped checkpoint-4" in out and TORN_FOLDER in out, out
    assert (run / TORN_FOLDER / "checkpoint-4").is_dir()  # kept, not deleted
    assert result["steps"] == 4 and steps(run) == [1, 2, 3, 4]  # no step past max_steps, each step once
    assert_same_weights(final_weights(run), final_weights(uninterrupted))


def test_the_checks_pass_whole_checkpoints_and_name_each_problem(uninterrupted, tmp_path):
    for name in ("checkpoint-2", "checkpoint-4"):
        assert checkpoint_problem(uninterrupted / name) is None
    assert "pool_active.json: missing" in checkpoint_problem(uninterrupted / "checkpoint-2", ("pool_active.json",))
    reasons = {}
    for i, how in enumerate(TORN):
        ckpt = tmp_path / f"c{i}" / "checkpoint-4"
        shutil.copytree(uninterrupted / "checkpoint-4", ckpt)
        tear(ckpt, how)
        reasons[how] = checkpoint_problem(ckpt)
    assert reasons == {"no trainer state": "trainer_state.json: missing",
                       "truncated weights": reasons["truncated weights"], "truncated optimizer": reasons["truncated optimizer"],
                       "empty folder": "empty", "no rng state": "rng_state.pth: missing"}
    assert reasons["truncated weights"].startswith("model.safetensors: cut short")
    assert reasons["truncated optimizer"].startswith("optimizer.pt: cut short")


def test_no_complete_checkpoint_is_one_line_that_says_how_to_start_over(tmp_path, uninterrupted, tiny_model,
                                                                         sample_states):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "final")
    tear(run / "checkpoint-2", "empty folder")
    tear(run / "checkpoint-4", "no trainer state")
    with pytest.raises(DataError, match="no complete checkpoint to resume from .*checkpoint-4: trainer_state.json: "
                                        "missing; checkpoint-2: empty.*--overwrite true") as err:
        train_pivotrl(pivotrl_config(tiny_model, run, resume=True), train_states=sample_states[:6], eval_states=[])
    assert "\n" not in str(err.value)
    assert (run / "checkpoint-4").is_dir() and (run / "checkpoint-2").is_dir()  # nothing moved or deleted
    assert resume_checkpoint(tmp_path / "nothing-here") is None


# A real SIGKILL in the middle of a save: the run's own process kills itself once the optimizer of
# checkpoint-KILL_AT is on disk, before its RNG state and trainer_state.json (the Trainer's last file).
KILLER = """
import os, signal, sys
from transformers import Trainer
save = Trainer._save_optimizer_and_scheduler
def save_then_die(self, output_dir):
    save(self, output_dir)
    if self.state.global_step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
Trainer._save_optimizer_and_scheduler = save_then_die
from pivotrl.cli import main
sys.argv = ["pivotrl", *sys.argv[1:]]
main()
"""


def pivotrl_cli(*args, kill_at=None, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "KILL_AT": str(kill_at or -1)}
    return subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def test_a_pivotrl_run_sigkilled_while_saving_its_last_checkpoint_resumes_to_max_steps(tmp_path, tiny_model,
                                                                                       sample_states):
    write_states(tmp_path / "pivots.jsonl", sample_states[:6])
    args = ["train", "--model", tiny_model, "--pivots", "pivots.jsonl", "--verifier", "test_resume:prefers_vowel",
            "--num_generations", "8", "--prompts_per_step", "2", "--max_completion_length", "4",
            "--learning_rate", "3e-2", "--eval_every", "0", "--eval_fraction", "0", "--max_steps", "4",
            "--save_steps", "2", "--report_to", "none", "--seed", "0", "--score_truncated", "true"]
    whole = pivotrl_cli(*args, "--output-dir", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = pivotrl_cli(*args, "--output-dir", "run", kill_at=4, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint-4").is_dir() and not (tmp_path / "run" / "final").exists()
    resumed = pivotrl_cli(*args, "--output-dir", "run", "--resume", "true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume: skipped checkpoint-4 (rng_state.pth: missing)" in resumed.stdout
    assert steps(tmp_path / "run") == [1, 2, 3, 4]
    assert not (tmp_path / "run" / "checkpoint-5").exists()
    assert_same_weights(final_weights(tmp_path / "run"), final_weights(tmp_path / "whole"))


def test_an_sft_run_sigkilled_mid_save_resumes_from_the_newest_complete_checkpoint(tmp_path, tiny_model, sample_path):
    args = ["sft", "--model", tiny_model, "--trajectories", sample_path, "--max_steps", "6", "--save_steps", "2",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--eval_every", "0", "--report_to",
            "none", "--seed", "0"]
    whole = pivotrl_cli(*args, "--output-dir", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = pivotrl_cli(*args, "--output-dir", "run", kill_at=4, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = pivotrl_cli(*args, "--output-dir", "run", "--resume", "true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume: skipped checkpoint-4" in resumed.stdout
    assert steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    assert_same_weights(final_weights(tmp_path / "run"), final_weights(tmp_path / "whole"))


@pytest.fixture(scope="module")
def sft_whole(tiny_model, tmp_path_factory):
    from pivotrl.data.sample import SAMPLE_PATH

    whole = tmp_path_factory.mktemp("sft") / "whole"
    train_sft(sft_config(tiny_model, SAMPLE_PATH, whole))
    return whole


@pytest.mark.parametrize("how", ["no trainer state", "truncated weights"])
def test_sft_skips_a_torn_checkpoint_in_process(tmp_path, tiny_model, sample_path, sft_whole, how):
    whole, run = sft_whole, tmp_path / "run"
    shutil.copytree(whole, run)
    shutil.rmtree(run / "final")
    tear(run / "checkpoint-4", how)
    result = train_sft(sft_config(tiny_model, sample_path, run, resume=True))
    assert result["trainer"].state.global_step == 4 and steps(run) == [1, 2, 3, 4]
    assert (run / TORN_FOLDER / "checkpoint-4").is_dir()
    assert_same_weights(final_weights(run), final_weights(whole))


def test_an_e2e_run_skips_a_torn_checkpoint_too(tmp_path, tiny_model):
    from toy_env import task

    from pivotrl.train.e2e import E2EConfig, train_e2e

    def config(out, **kw):
        return E2EConfig(model=tiny_model, environment="toy_env:CounterEnv", output_dir=str(out), num_generations=2,
                         prompts_per_step=1, max_completion_length=24, max_tool_calling_iterations=2, max_steps=4,
                         save_steps=2, learning_rate=1e-3, eval_every=0, report_to=[], seed=0, **kw)

    tasks = [task(n) for n in (1, 2, 3, 4)]
    whole, run = tmp_path / "whole", tmp_path / "run"
    train_e2e(config(whole), tasks=tasks, eval_tasks=[])
    shutil.copytree(whole, run)
    shutil.rmtree(run / "final")
    tear(run / "checkpoint-4", "truncated optimizer")
    result = train_e2e(config(run, resume=True), tasks=tasks, eval_tasks=[])
    assert result["steps"] == 4 and steps(run) == [1, 2, 3, 4] and (run / TORN_FOLDER / "checkpoint-4").is_dir()
    assert_same_weights(final_weights(run), final_weights(whole))
