"""Training on the CPU with tiny locally built models: PivotRL (GRPO), SFT, E2E RL, the ledger."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from typer.testing import CliRunner

from pivotrl import extract_states
from pivotrl.cli import app
from pivotrl.errors import DataError
from pivotrl.train.e2e import E2EConfig, train_e2e
from pivotrl.train.ledger import read_ledger
from pivotrl.train.pivotrl_trainer import PivotRLConfig, train_pivotrl
from pivotrl.train.sft import SFTRunConfig, train_sft

runner = CliRunner()
VOWELS = "aeiou"


def prefers_vowel(completion, state):
    """A test reward: 1 when the completion starts with a vowel."""
    text = completion if isinstance(completion, str) else json.dumps(completion)
    return 1.0 if text.strip()[:1].lower() in VOWELS else 0.0


def vowel_share(completion, state):
    """A test reward that nearly always differs between samples: the share of vowels in the text."""
    text = completion if isinstance(completion, str) else json.dumps(completion)
    return sum(c.lower() in VOWELS for c in text) / max(len(text), 1)


def always_one(completion, state):
    return 1.0


def small(**kw):
    # a few tokens of a random model: every completion is cut, and these test rewards judge the prefix
    base = dict(num_generations=8, prompts_per_step=2, max_completion_length=4, temperature=1.0, learning_rate=3e-2,
                eval_every=0, save_steps=100, report_to=[], seed=0, score_truncated=True)
    base.update(kw)
    return PivotRLConfig(**base)


def weights(path):
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def vowel_mass(model_dir, state):
    """P(first generated token starts with a vowel) at a state's prompt."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    text = tok.apply_chat_template(state.context, tools=state.tools, tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
    probs = logits.softmax(-1)
    vowel_ids = [i for i in range(len(probs)) if tok.decode([i]).strip()[:1].lower() in VOWELS]
    return probs[vowel_ids].sum().item()


def test_pivotrl_end_to_end_from_a_trajectory_file_changes_the_weights(tmp_path, tiny_model, sample_path):
    states, profile, pivots = tmp_path / "states.jsonl", tmp_path / "profile.jsonl", tmp_path / "pivots.jsonl"
    assert runner.invoke(app, ["extract", str(sample_path), "-o", str(states)]).exit_code == 0
    head = states.read_text().splitlines()[:6]
    states.write_text("\n".join(head) + "\n")
    r = runner.invoke(app, ["profile", str(states), "--model", tiny_model, "--k", "2", "--max-tokens", "4",
                            "--score-truncated", "true", "-v", f"{__name__}:prefers_vowel", "-o", str(profile)])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["select", str(profile), "-o", str(pivots), "--rule", "all"]).exit_code == 0
    cfg = tmp_path / "pivotrl.yaml"
    cfg.write_text(f"model: {tiny_model}\npivots: {pivots}\noutput_dir: {tmp_path / 'run'}\n"
                   f"verifier: {__name__}:prefers_vowel\nnum_generations: 4\nprompts_per_step: 2\n"
                   "max_completion_length: 4\nlearning_rate: 1e-2\neval_fraction: 0\nreport_to: []\n"
                   "score_truncated: true\n")  # 4 tokens of a random model are always cut; the reward judges the prefix
    r = runner.invoke(app, ["train", "--config", str(cfg), "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    before, after = weights(tiny_model), weights(tmp_path / "run" / "final")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ledger = read_ledger(tmp_path / "run")
    assert ledger[0]["kind"] == "profiling" and ledger[0]["rollout_turns"] == 6 * 2  # the profile's bill
    steps = [r for r in ledger if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["rollout_turns"] for r in steps] == [8, 16, 24]  # 2 prompts x 4 generations per step
    assert all(r["verifier_calls"] == r["rollout_turns"] for r in steps)
    assert all(0 < r["generated_tokens"] <= 4 * r["rollout_turns"] for r in steps)


def test_equal_rewards_in_a_group_give_zero_advantage(tmp_path, tiny_model, sample_states):
    run = tmp_path / "run"
    train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:always_one", max_steps=2),
                  train_states=sample_states[:4], eval_states=[])
    before, after = weights(tiny_model), weights(run / "final")
    assert all(torch.equal(before[k], after[k]) for k in before)  # no signal, no update (beta = 0)
    steps = [r for r in read_ledger(run) if r["kind"] == "step"]
    assert all(r["frac_reward_zero_std"] == 1.0 and r["grad_norm"] == 0.0 for r in steps)


SCORED: list[str] = []


def records_state(completion, state):
    """A test reward that notes which state it scored, by its messages (one process: a module list is enough)."""
    SCORED.append(json.dumps(state.context))
    return prefers_vowel(completion, state)


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_a_visit_cap_stops_after_each_pivot_is_drawn_that_often(tmp_path, tiny_model, sample_states, num_iterations):
    """max_visits_per_pivot=1 (the paper's regime): every pivot is rolled out once, in one group of
    num_generations, whatever the micro-batching; with num_iterations 2 each generation serves two
    optimizer steps, so the run takes twice the steps for the same draws. The ledger says how many
    pivots a step drew and how many steps that makes."""
    states = sample_states[:6]
    SCORED.clear()
    run = tmp_path / "run"
    train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:records_state", num_generations=2,
                        prompts_per_step=2, max_visits_per_pivot=1.0, max_steps=1000, group_micro_batches=True,
                        num_iterations=num_iterations), train_states=states, eval_states=[])
    assert len({json.dumps(s.context) for s in states}) == 6
    assert sorted(SCORED) == sorted(json.dumps(s.context) for s in states for _ in range(2))
    data = next(r for r in read_ledger(run) if r["kind"] == "data")
    assert data["starting_pivots"] == 6 and data["pivots_per_step"] == 2 / num_iterations
    assert [r["step"] for r in read_ledger(run) if r["kind"] == "step"] == list(range(1, 3 * num_iterations + 1))
    assert data["max_steps"] == 3 * num_iterations


def test_the_verifier_reward_reaches_the_trainer(tmp_path, tiny_model, sample_states):
    state = sample_states[1]
    run = tmp_path / "run"
    train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=8,
                        prompts_per_step=1, max_completion_length=2), train_states=[state], eval_states=[])
    before, after = vowel_mass(tiny_model, state), vowel_mass(run / "final", state)
    assert after > before + 0.1, (before, after)


class StopAt(TrainerCallback):
    """Kill the run once step `step` is done and logged (after the ledger callback wrote it)."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kw):
        if state.global_step == self.step and logs and "loss" in logs:
            raise KeyboardInterrupt


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_model, sample_states):
    run = tmp_path / "run"
    cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=4, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_pivotrl(cfg, train_states=sample_states[:6], eval_states=[], extra_callbacks=[StopAt(3)])
    assert [r["step"] for r in read_ledger(run) if r["kind"] == "step"] == [1, 2, 3]
    cfg.resume = True
    result = train_pivotrl(cfg, train_states=sample_states[:6], eval_states=[])
    assert result["steps"] == 4
    steps = [r for r in read_ledger(run) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # step 3 redone from checkpoint-2, not duplicated
    assert [r["rollout_turns"] for r in steps] == [16, 32, 48, 64]  # counters continue from the checkpoint


def test_refresh_reprofiles_the_pool_and_logs_who_enters_and_leaves(tmp_path, tiny_model, sample_states):
    import copy

    from pivotrl.train.refresh import ACTIVE_FILE

    pool = copy.deepcopy(sample_states[:8])
    for i, s in enumerate(pool):  # the profile that selected the pool: three pivots, five solved or hopeless
        s.meta["profile"] = {"reward_mean": 0.5, "reward_var": 0.25} if i < 3 else {"reward_mean": float(i % 2), "reward_var": 0.0}
    run = tmp_path / "run"
    cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=4,
                refresh_every=2, refresh_k=8, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_pivotrl(cfg, train_states=pool, eval_states=[], extra_callbacks=[StopAt(3)])
    refreshes = [r for r in read_ledger(run) if r["kind"] == "refresh"]
    assert refreshes[0]["step"] == 0 and refreshes[0]["refresh_active"] == 3  # the pivots, not the whole pool
    assert [r["step"] for r in refreshes] == [0, 2]
    after = refreshes[1]
    assert after["refresh_pool"] == 8 and 0 < after["refresh_active"] <= 8
    assert after["refresh_active"] == (3 if after["refresh_kept_old_set"] else 3 + after["refresh_entered"] - after["refresh_left"])
    assert after["rollout_turns"] == 2 * 16 + 8 * 8  # two steps, then the re-profiling samples, charged
    saved = json.loads((run / "checkpoint-2" / ACTIVE_FILE).read_text())["active"]
    assert len(saved) == after["refresh_active"]
    cfg.resume = True
    train_pivotrl(cfg, train_states=pool, eval_states=[])
    refreshes = [r for r in read_ledger(run) if r["kind"] == "refresh"]
    assert [r["step"] for r in refreshes] == [0, 2, 2, 4]
    assert refreshes[2]["refresh_restored"] and refreshes[2]["refresh_active"] == len(saved)  # not the whole pool


def test_refresh_leaves_the_training_random_stream_alone(tiny_model, sample_states):
    from pivotrl.train.refresh import ActivePool, RefreshCallback
    from pivotrl.train.ledger import Ledger

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    pool = ActivePool([{}] * 2, [0, 1])
    cb = RefreshCallback(sample_states[:2], pool, get_verifier_for_test(), tok, 1, 2, 0.75, 2, Ledger("/tmp", "t"))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    cb._profile(model, step=7, share=[0, 1])
    assert torch.equal(torch.rand(3), expected)


def test_a_sampled_refresh_profiles_its_sample_and_leaves_the_rest_in_place(tiny_model, sample_states):
    from pivotrl.train.ledger import Ledger
    from pivotrl.train.refresh import ActivePool, RefreshCallback

    tok = AutoTokenizer.from_pretrained(tiny_model)
    pool = ActivePool([{}] * 8, [0, 1, 2])
    cb = RefreshCallback(sample_states[:8], pool, get_verifier_for_test(), tok, 1, 2, 0.75, 2, Ledger("/tmp", "t"),
                         sample=3, seed=5)
    drawn = cb.sampled(10)
    assert len(drawn) == 3 and drawn == cb.sampled(10) and len(set(drawn)) == 3  # seeded by (seed, step)
    assert any(cb.sampled(step) != drawn for step in range(11, 20))
    # the sample's states that still pass are kept, those that stopped leave; the others keep their place
    cb._apply([i for i in drawn if i >= 3][:1], step=10, sampled=drawn)
    expected = ({0, 1, 2} - set(drawn)) | set([i for i in drawn if i >= 3][:1])
    assert set(pool.active) == (expected or {0, 1, 2})
    assert RefreshCallback(sample_states[:8], pool, None, tok, 1, 2, 0.75, 2, Ledger("/tmp", "t")).sampled(3) == list(range(8))


def get_verifier_for_test():
    from pivotrl.rewards import get_verifier

    return get_verifier(f"{__name__}:prefers_vowel")


def test_eval_accuracy_is_logged_on_held_out_trajectories(tmp_path, tiny_model, sample_states):
    run = tmp_path / "run"
    result = train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel",
                                 max_steps=2, eval_every=1, eval_fraction=0.25), train_states=sample_states[:12], eval_states=sample_states[12:16])
    evals = [r for r in read_ledger(run) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2] and all(r["eval_states"] == 4 for r in evals)
    assert result["eval_states"] == 4


def test_sft_trains_on_assistant_tokens_only(tmp_path, tiny_model, sample_path):
    result = train_sft(SFTRunConfig(model=tiny_model, trajectories=str(sample_path), output_dir=str(tmp_path / "sft"),
                                    max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, eval_every=0, eval_max_states=2,
                                    eval_max_tokens=4, report_to=[]))
    trainer = result["trainer"]
    tok = trainer.processing_class
    ex = trainer.train_dataset[0]
    batch = trainer.data_collator([ex])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = tok.decode([i for i, l in zip(ids, labels) if l != -100])
    ignored = tok.decode([i for i, l in zip(ids, labels) if l == -100])
    assistant = [m for m in ex["messages"] if m["role"] == "assistant"]
    assert "Verify the user" not in trained and "<tool_response>" not in trained  # system and tool text masked
    assert all(m["content"] in trained for m in assistant if m["content"])
    assert trained.count("<tool_call>") == sum(len(m.get("tool_calls") or []) for m in assistant)
    assert "Verify the user" in ignored and "<|im_start|>user" in ignored
    assert [r["step"] for r in read_ledger(tmp_path / "sft") if r["kind"] == "step"] == [1, 2]
    assert all(r["rollout_turns"] == 0 for r in read_ledger(tmp_path / "sft"))  # SFT samples nothing


@pytest.fixture(scope="module")
def toy_policy(tmp_path_factory):
    """A model that calls the toy environment's tool over several turns (brief SFT on its expert)."""
    from toy_env import expert_trajectory

    from pivotrl.data.loaders import normalise_record
    from pivotrl.models import build_tiny_model

    root = tmp_path_factory.mktemp("toy")
    texts = [json.dumps(expert_trajectory(n)["messages"]) for n in range(1, 4)] * 5
    base = build_tiny_model(root / "base", texts, hidden_size=128, layers=2, vocab_size=300)
    trajs = [normalise_record(expert_trajectory(n)) for n in (1, 2, 3)] * 20
    train_sft(SFTRunConfig(model=str(base), output_dir=str(root / "sft"), learning_rate=5e-3, max_steps=70, per_device_train_batch_size=8,
                           report_to=[], save_steps=10_000), trajectories=trajs, eval_states=[])
    return str(root / "sft" / "final")


def test_e2e_completes_episodes_and_counts_every_model_call(tmp_path, toy_policy):
    from toy_env import CounterEnv, task

    calls = {"n": 0}

    class Counted(CounterEnv):
        def increment(self, by: int) -> str:
            """Add to the counter.

            Args:
                by: How much to add.
            """
            calls["n"] += 1
            return super().increment(by)

    run = tmp_path / "e2e"
    result = train_e2e(E2EConfig(model=toy_policy, output_dir=str(run), num_generations=4, prompts_per_step=2,
                                 max_completion_length=400, max_tool_calling_iterations=4, learning_rate=1e-3,
                                 max_steps=2, eval_every=0, report_to=[], gradient_accumulation_steps=2),
                       tasks=[task(n) for n in (1, 2, 3, 2)], eval_tasks=[], environment=Counted)
    assert result["steps"] == 2
    ledger = read_ledger(run)
    steps = [r for r in ledger if r["kind"] == "step"]
    rollouts = 2 * (2 * 4) * 2  # steps x (prompts x generations) x accumulation
    # every tool call counted: those the environment ran, and those it refused (a bad argument, an
    # unknown tool), which the policy also made and is answered with an error message
    assert 0 < calls["n"] <= steps[-1]["env_steps"] <= calls["n"] + rollouts
    # one model call to start each rollout, one more after each tool message (one call per turn here)
    assert steps[-1]["rollout_turns"] == rollouts + steps[-1]["env_steps"]
    # every completion of the step, accumulation included (TRL logs their mean length)
    per_step = [b["generated_tokens"] - a.get("generated_tokens", 0) for a, b in zip([{}] + steps, steps)]
    assert per_step == [round(r["completions/mean_length"] * 16) for r in steps]


def test_e2e_logs_episode_success_on_held_out_tasks(tmp_path, toy_policy):
    from toy_env import task

    run = tmp_path / "e2e"
    train_e2e(E2EConfig(model=toy_policy, environment="toy_env:CounterEnv", output_dir=str(run), num_generations=2,
                        prompts_per_step=1, max_completion_length=200, max_tool_calling_iterations=4, max_steps=1, eval_every=0,
                        report_to=[]), tasks=[task(1)], eval_tasks=[task(1), task(2), task(3)])
    evals = [r for r in read_ledger(run) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1]
    assert all(r["eval_episodes"] == 3 and r["eval_turns_per_episode"] > 1 and 0 <= r["eval_success"] <= 1
               for r in evals)


def test_episodes_run_tools_and_survive_bad_calls(toy_policy):
    from toy_env import CounterEnv, task

    from pivotrl.eval.episodes import call_tool, run_episodes
    from pivotrl.sampling import get_sampler

    eps = run_episodes(get_sampler("transformers", model=toy_policy), CounterEnv, [task(1), task(2)], max_turns=5,
                       max_tokens=40)
    for ep in eps:
        assert ep.turns == ep.tool_calls + 1 or not ep.done  # one model call per tool call, plus the final answer
        assert [m["role"] for m in ep.messages][:3] == ["user", "assistant", "tool"]
    env = CounterEnv()
    env.reset(target=2)
    assert call_tool(env, "explode", {}).startswith("Error: unknown tool 'explode'")
    assert call_tool(env, "increment", {"by": 1, "extra": 2}).startswith("Error: bad arguments for increment")
    assert call_tool(env, "increment", [1]).startswith("Error: arguments of increment must be a JSON object")
    assert call_tool(env, "increment", {"by": "x"}).startswith("Error:")  # the environment's own failure
    assert call_tool(env, "increment", {"by": 2}) == "2" and env.get_reward() == 1.0


def test_compare_plots_runs_and_reports_the_cost_to_reach_a_target(tmp_path):
    for name, trainer, prof, curve in [("pivot", "pivotrl", 100, [(0, 0.1), (50, 0.5), (100, 0.7)]),
                                       ("e2e", "e2e", 0, [(0, 0.1), (400, 0.5), (800, 0.7)])]:
        d = tmp_path / name
        d.mkdir()
        lines = [{"kind": "profiling", "rollout_turns": prof, "wall_clock_s": 10.0}] if prof else []
        lines += [{"kind": "eval", "trainer": trainer, "step": i, "rollout_turns": t, "wall_clock_s": t / 10,
                   "eval_accuracy": v} for i, (t, v) in enumerate(curve)]
        (d / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "cmp.png"
    r = runner.invoke(app, ["compare", str(tmp_path / "pivot"), str(tmp_path / "e2e"), "--target", "0.7",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000
    assert "200" in r.output and "800" in r.output  # pivot reaches 0.7 at 100 + 100 profiling turns, e2e at 800
    r = runner.invoke(app, ["compare", str(tmp_path / "pivot"), "--metric", "nope", "-o", str(out)])
    assert r.exit_code != 0


def test_bad_trl_values_and_a_missing_vllm_are_refused_before_any_model_loads(tmp_path):
    import importlib.util

    r = runner.invoke(app, ["train", "--model", "no/such-model", "--pivots", "x.jsonl", "--loss_type", "foo"])
    assert r.exit_code != 0 and "loss_type must be one of" in str(r.exception) and "dapo" in str(r.exception)
    r = runner.invoke(app, ["sft", "--model", "no/such-model", "--loss_type", "foo"])
    assert r.exit_code != 0 and "cannot load model" not in str(r.exception)  # TRL's parser knows SFT's choices
    if importlib.util.find_spec("vllm") is None:
        (tmp_path / "p.jsonl").write_text("")
        r = runner.invoke(app, ["train", "--model", "no/such-model", "--pivots", str(tmp_path / "p.jsonl"),
                                "--use_vllm", "true", "--output_dir", str(tmp_path / "run")])
        assert "pip install 'pivotrl[vllm]'" in str(r.exception) and "cannot load model" not in str(r.exception)


def test_train_flags_are_checked(tmp_path):
    r = runner.invoke(app, ["train", "--no-such-key", "1"])
    assert r.exit_code != 0 and "unknown option(s) --no-such-key" in str(r.exception)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: m\nlearning_rat: 1.0e-4\n")
    r = runner.invoke(app, ["train", "--config", str(bad)])
    assert r.exit_code != 0 and "learning_rat" in str(r.exception) and "bad.yaml" in str(r.exception)


@pytest.mark.parametrize("cls_path,config", [("pivotrl.train.pivotrl_trainer:PivotRLConfig", "configs/pivotrl.yaml"),
                                             ("pivotrl.train.sft:SFTRunConfig", "configs/sft.yaml"),
                                             ("pivotrl.train.e2e:E2EConfig", "configs/e2e.yaml"),
                                             ("pivotrl.train.pivotrl_trainer:PivotRLConfig",
                                              "configs/qwen3-thinking-train.yaml")])
def test_shipped_configs_load(cls_path, config):
    import importlib
    from pathlib import Path

    from pivotrl.cli import _config_from_cli

    module, _, name = cls_path.partition(":")
    cfg = _config_from_cli(getattr(importlib.import_module(module), name), Path(__file__).parent.parent / config, [])
    assert isinstance(cfg.learning_rate, float) and cfg.model


def test_the_thinking_configs_profile_and_train_alike():
    from pathlib import Path

    from pivotrl.cli import _config_from_cli
    from pivotrl.pivots.profile import ProfileConfig

    root = Path(__file__).parent.parent / "configs"
    profile = _config_from_cli(ProfileConfig, root / "qwen3-thinking-profile.yaml", [])
    train = _config_from_cli(PivotRLConfig, root / "qwen3-thinking-train.yaml", [])
    assert profile.model == train.model and profile.max_tokens == train.max_completion_length >= 4096
    assert (profile.chat_template_kwargs, profile.temperature, profile.top_p) == \
        (train.chat_template_kwargs or {}, train.temperature, train.top_p)


@pytest.mark.parametrize("cls_path,yaml_keys,flags,expected", [
    ("pivotrl.train.pivotrl_trainer:PivotRLConfig",
     "loss_type: grpo\nscale_rewards: none\nmask_truncated_completions: true\ngradient_accumulation_steps: 2\n",
     ["--beta", "0.04", "--vllm_gpu_memory_utilization", "0.5", "--top-k", "20", "--push_to_hub", "false"],
     {"loss_type": "grpo", "scale_rewards": "none", "mask_truncated_completions": True,
      "gradient_accumulation_steps": 2, "beta": 0.04, "vllm_gpu_memory_utilization": 0.5, "top_k": 20,
      "push_to_hub": False}),
    ("pivotrl.train.sft:SFTRunConfig", "packing: true\nweight_decay: 0.01\n",
     ["--warmup_steps", "3", "--lr_scheduler_type", "constant", "--completion_only_loss", "false"],
     {"packing": True, "weight_decay": 0.01, "warmup_steps": 3, "lr_scheduler_type": "constant",
      "completion_only_loss": False}),
    ("pivotrl.train.e2e:E2EConfig", "max_tool_calling_iterations: 3\nscale_rewards: batch\n",
     ["--epsilon", "0.3", "--mask-truncated-completions", "true"],
     {"max_tool_calling_iterations": 3, "scale_rewards": "batch", "epsilon": 0.3, "mask_truncated_completions": True}),
])
def test_every_trl_field_is_a_key_and_a_flag(tmp_path, cls_path, yaml_keys, flags, expected):
    """Keys pivotrl never names reach the config from YAML and from flags, through TRL's parser."""
    import importlib

    from pivotrl.cli import _config_from_cli

    module, _, name = cls_path.partition(":")
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nverifier_options: {a: 1}\n" * ("pivotrl_trainer" in module) + "model: m\n" * ("pivotrl_trainer" not in module) + yaml_keys)
    cfg = _config_from_cli(getattr(importlib.import_module(module), name), path, flags)
    for key, value in expected.items():
        got = getattr(cfg, key)
        assert (got.value if hasattr(got, "value") else got) == value, key


def test_a_trl_flag_reaches_the_trainer(tmp_path, tiny_model, sample_states):
    from pivotrl.pivots import write_states

    pivots = tmp_path / "pivots.jsonl"
    write_states(pivots, sample_states[:4])
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--model", tiny_model, "--pivots", str(pivots), "--output-dir", str(run),
                            "--verifier", f"{__name__}:prefers_vowel", "--num_generations", "4", "--prompts_per_step",
                            "2", "--max_completion_length", "4", "--max_steps", "1", "--eval_fraction", "0",
                            "--report_to", "none", "--loss_type", "grpo", "--mask_truncated_completions", "true",
                            "--verifier_options", "{}"])
    assert r.exit_code == 0, r.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss_type"] == "grpo" and saved["mask_truncated_completions"] is True
    assert saved["per_device_train_batch_size"] == 8 and saved["verifier"].endswith("prefers_vowel")


def test_lora_training_and_tensorboard_logs(tmp_path, tiny_model, sample_states, monkeypatch):
    from pathlib import Path

    run = tmp_path / "lora"
    monkeypatch.chdir(Path(tiny_model).parent)  # the base given as a relative path, as users do
    train_pivotrl(small(model=Path(tiny_model).name, output_dir=str(run), verifier=f"{__name__}:prefers_vowel",
                        max_steps=2, lora=True, lora_r=4, lora_alpha=8, learning_rate=1e-2,
                        report_to=["tensorboard"]), train_states=sample_states[:4], eval_states=[])
    final = run / "final"
    assert (final / "adapter_config.json").exists() and (final / "adapter_model.safetensors").exists()
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model).resolve())  # loads from any folder
    assert list(run.rglob("events.out.tfevents*")), "TensorBoard event files"


def test_a_bf16_checkpoint_trains_with_float32_master_weights(tmp_path, tiny_model, sample_states):
    """At NVIDIA's lr 1e-6 an update is far below bf16's resolution: trained in bf16 it rounds away."""
    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model).to(torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(bf16)
    run = tmp_path / "run"
    train_pivotrl(small(model=str(bf16), output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=3,
                        learning_rate=1e-6), train_states=sample_states[:4], eval_states=[])
    before = {k: v.float() for k, v in weights(bf16).items()}
    after = weights(run / "final")
    assert after["model.layers.0.self_attn.q_proj.weight"].dtype == torch.float32
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"):
        changed = (before[name] != after[name]).float().mean().item()
        assert changed > 0.5, (name, changed)


class RecordPrecision(TrainerCallback):
    """Records, for every forward of the policy's input embeddings (inside the model's forward, where
    mixed precision wraps it), whether it ran with gradients and in which autocast dtype."""

    def __init__(self):
        self.seen = set()

    def on_train_begin(self, args, state, control, model=None, **kw):
        def hook(module, inputs):
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32
            self.seen.add((torch.is_grad_enabled(), dtype))

        model.get_input_embeddings().register_forward_pre_hook(hook)


def test_cpu_bf16_runs_generation_and_update_in_bf16_autocast_with_float32_weights(tmp_path, tiny_model,
                                                                                    sample_states):
    from pivotrl.train.common import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    rec, run = RecordPrecision(), tmp_path / "run"
    before = weights(tiny_model)
    cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=2, cpu_bf16=True)
    assert cfg.bf16 and cfg.use_cpu
    train_pivotrl(cfg, train_states=sample_states[:4], eval_states=[], extra_callbacks=[rec])
    assert rec.seen == {(False, torch.bfloat16), (True, torch.bfloat16)}  # sampling and the loss's forward
    after = weights(run / "final")
    name = "model.layers.0.mlp.up_proj.weight"
    assert after[name].dtype == torch.float32 and not torch.equal(before[name], after[name])


def test_cpu_bf16_falls_back_to_float32_where_the_cpu_lacks_it(monkeypatch, tiny_model):
    import pivotrl.train.common as common

    monkeypatch.setattr(common, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert not small(model=tiny_model, cpu_bf16=True).bf16
    assert not small(model=tiny_model).bf16  # float32 unless asked, whatever TRL's default


def test_sft_and_pivotrl_hold_out_the_same_trajectories(tmp_path, tiny_model):
    """One split, written by `extract`, read by both: no held-out episode is trained on by either."""
    from pivotrl.data.sample import write_sample
    from pivotrl.pivots import load_states, write_states
    from pivotrl.pivots.split import carry_heldout, heldout_path, read_heldout

    trajs = write_sample(tmp_path / "trajs.jsonl", n=100, seed=3)
    states = tmp_path / "states.jsonl"
    assert runner.invoke(app, ["extract", str(trajs), "-o", str(states), "--heldout-fraction", "0.1"]).exit_code == 0
    held = read_heldout(heldout_path(states))
    assert len(held) == 10
    pivots = tmp_path / "pivots.jsonl"  # pivots come from some trajectories only, as after selection
    write_states(pivots, load_states(states)[::3])
    carry_heldout(states, pivots)
    p = train_pivotrl(small(model=tiny_model, pivots=str(pivots), output_dir=str(tmp_path / "rl"), max_steps=1,
                            verifier=f"{__name__}:prefers_vowel", eval_max_states=1000))
    s = train_sft(SFTRunConfig(model=tiny_model, trajectories=str(trajs), heldout=str(heldout_path(states)),
                               output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, eval_every=0,
                               eval_max_states=1000, eval_max_tokens=2, report_to=[]))
    assert read_heldout(tmp_path / "rl" / "heldout.json") == held == read_heldout(tmp_path / "sft" / "heldout.json")
    assert s["trajectories"] == 90
    pivot_tids = [st.trajectory_id for st in load_states(pivots)]
    assert p["train_states"] == sum(t not in held for t in pivot_tids)
    # both evaluate on every state of the held-out trajectories (extract wrote them; select's carry keeps them
    # beside the pivots), not PivotRL on its held-out pivots only
    all_tids = [st.trajectory_id for st in load_states(states)]
    assert p["eval_states"] == s["eval_states"] == sum(t in held for t in all_tids) > sum(t in held for t in pivot_tids)


def test_two_processes_write_one_ledger_with_every_ranks_rollouts(tmp_path, tiny_model, sample_states):
    """`torch.distributed.run --nproc_per_node 2` on the CPU (gloo, DDP): one line per step and per
    eval, counting both ranks' rollouts, and one profiling line. Evaluation and refresh are split over
    both ranks: each refresh samples the pool once, and the held-out set is measured whole."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pivotrl.pivots import write_states

    pivots = tmp_path / "pivots.jsonl"
    write_states(pivots, sample_states[:12])
    (tmp_path / "pivots.jsonl.meta.json").write_text(json.dumps(
        {"samples": 24, "generated_tokens": 96, "verifier_calls": 24, "wall_clock_s": 1.0, "states": 12}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {tiny_model}\npivots: {pivots}\noutput_dir: {tmp_path / 'run'}\n"
                   f"verifier: {__name__}:prefers_vowel\nnum_generations: 4\nprompts_per_step: 2\n"
                   "max_completion_length: 4\nlearning_rate: 1.0e-2\neval_fraction: 0.3\neval_every: 1\n"
                   "report_to: []\nmax_steps: 100\nmax_visits_per_pivot: 1\nmax_seconds: 600\ndisable_tqdm: true\n"
                   "refresh_every: 1\nrefresh_k: 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "pivotrl.cli", "train", "--config", str(cfg)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained 2 steps") == 1, r.stdout[-2000:]
    ledger = read_ledger(tmp_path / "run")
    # the visit cap counts both ranks' draws: 2 x 2 pivots a step, so each of the 6 pivots once takes 2 steps
    data = next(x for x in ledger if x["kind"] == "data")
    assert (data["pivots_per_step"], data["starting_pivots"], data["max_steps"]) == (4, 6, 2)
    assert [x["kind"] for x in ledger].count("profiling") == 1
    steps = [x for x in ledger if x["kind"] == "step"]
    assert [x["step"] for x in steps] == [1, 2]
    assert all(x["verifier_calls"] == x["rollout_turns"] for x in steps)
    refreshes = [x for x in ledger if x["kind"] == "refresh" and x["step"] > 0]  # step 0: the starting set
    pool = refreshes[0]["refresh_pool"]
    assert [x["step"] for x in refreshes] == [1, 2] and pool > 0
    # a step: 2 ranks x 2 prompts x 4 generations; a refresh: every pool state refresh_k (2) times, once
    # over both ranks (each profiles its half); each step's line follows its refresh
    assert [x["rollout_turns"] for x in refreshes] == [x["rollout_turns"] for x in steps] == \
        [16 + pool * 2, 32 + 2 * pool * 2]
    evals = [x for x in ledger if x["kind"] == "eval"]
    assert [x["step"] for x in evals] == [0, 1, 2] and evals[2]["rollout_turns"] == 32 + pool * 2  # before its refresh
    assert evals[0]["eval_states"] == 6  # both ranks' halves, gathered


def test_two_processes_evaluate_held_out_states_and_episodes_as_one_process_does(tmp_path, toy_policy):
    """Each of 2 ranks (gloo, DDP) evaluates its share of the held-out states and episodes; the
    line written is the whole set's, equal to one process's (greedy)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from toy_env import expert_trajectory, task

    from pivotrl.data.loaders import normalise_record
    from pivotrl.pivots import write_states

    states = extract_states([normalise_record(expert_trajectory(n)) for n in (1, 2, 3, 4, 5)])
    write_states(tmp_path / "pivots.jsonl", extract_states([normalise_record(expert_trajectory(6))]))
    write_states(tmp_path / "heldout.jsonl", states)
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(task(n)) + "\n" for n in (1, 2, 3, 4, 5)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    evals = {}
    for name, launch in (("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]), ("one", [])):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"model: {toy_policy}\npivots: {tmp_path / 'pivots.jsonl'}\noutput_dir: {tmp_path / name}\n"
                       f"eval_states: {tmp_path / 'heldout.jsonl'}\neval_tasks: {tmp_path / 'tasks.jsonl'}\n"
                       "eval_environment: toy_env:CounterEnv\neval_max_turns: 8\nverifier: tool_call\n"
                       "num_generations: 2\nprompts_per_step: 1\nmax_completion_length: 64\nlearning_rate: 1.0e-6\n"
                       "report_to: []\nmax_steps: 1\ndisable_tqdm: true\n")
        r = subprocess.run([sys.executable, *launch, "-m", "pivotrl.cli", "train", "--config", str(cfg)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        evals[name] = [x for x in read_ledger(tmp_path / name) if x["kind"] == "eval"][0]
    keys = ("eval_accuracy", "eval_states", "eval_success", "eval_episodes", "eval_turns_per_episode")
    two, one = ({k: evals[n][k] for k in keys} for n in ("two", "one"))
    assert two == pytest.approx(one)
    assert one["eval_states"] == len(states) and one["eval_episodes"] == 5
    assert 0 < one["eval_accuracy"] and 0 < one["eval_success"]  # the toy policy acts: a comparison that can fail


FSDP_WORKER = """
import json, sys
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from pivotrl.train.distributed import full_replica

dist.init_process_group("gloo")
rank, path, out = dist.get_rank(), sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
sharded = all(p.to_local().numel() < p.numel() for p in model.parameters())
replica = full_replica(model, model)
prompts = ["Count to three.", "Where is my order?", "ok"][: 1 + 2 * rank]  # ranks generate different amounts
ids = tok(prompts, return_tensors="pt", padding=True)
got = replica.generate(**ids, max_new_tokens=4 + 6 * rank, do_sample=False).tolist()
want = AutoModelForCausalLM.from_pretrained(path).generate(**ids, max_new_tokens=4 + 6 * rank, do_sample=False).tolist()
json.dump({"sharded": sharded, "same": got == want, "replica_plain": not any(hasattr(p, "to_local")
           for p in replica.parameters())}, open(f"{out}.{rank}", "w"))
dist.destroy_process_group()
"""


def test_an_fsdp_sharded_policy_generates_on_each_rank_alone_as_the_unsharded_one(tmp_path, tiny_model):
    """FSDP2 (torch's `fully_shard`) on 2 CPU processes (gloo): the replica `generation_policy` uses
    under FSDP has every parameter on each rank, and ranks that generate different numbers of tokens
    (no forward in lockstep) get the unsharded model's greedy tokens."""
    import os
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(FSDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(worker), tiny_model, str(tmp_path / "out")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in (0, 1)]
    assert results == [{"sharded": True, "same": True, "replica_plain": True}] * 2


def bos_tokenizer(model_dir):
    """The tiny tokenizer made to behave like Llama 3's: its template writes BOS, and so does tokenizing."""
    from tokenizers.processors import TemplateProcessing

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.add_special_tokens({"bos_token": "<|bos|>"})
    tok._tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B",
                                                       special_tokens=[("<|bos|>", tok.bos_token_id)])
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    return tok


def test_training_prompts_tokenize_as_profiling_and_eval_do(tiny_model, sample_states):
    """TRL tokenizes text prompts with special tokens; profiling and eval tokenize the rendered text
    without them. Both must give one BOS and the same ids, with a BOS-adding tokenizer too."""
    from pivotrl.sampling.base import Prompt, render_prompt
    from pivotrl.train.common import grpo_dataset

    for tok in (AutoTokenizer.from_pretrained(tiny_model), bos_tokenizer(tiny_model)):
        ds = grpo_dataset(sample_states[:5], tok, template_kwargs={"enable_thinking": False})
        for state, text in zip(sample_states[:5], ds["prompt"]):
            trained = tok(text)["input_ids"]  # as GRPOTrainer._tokenize_prompts does
            sampled = tok(render_prompt(tok, Prompt(state.context, state.tools)), add_special_tokens=False)["input_ids"]
            assert trained == sampled
            if tok.bos_token_id is not None:
                assert trained.count(tok.bos_token_id) == 1


def test_chat_template_kwargs_reach_every_renderer(tiny_model, sample_states):
    from pivotrl.sampling.base import Prompt, render_prompt
    from pivotrl.sampling.transformers_backend import TransformersSampler
    from pivotrl.train.common import render_prompts

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = "{% if flag %}FLAG{% endif %}" + tok.chat_template
    state = sample_states[0]
    assert render_prompts([state], tok, template_kwargs={"flag": True})[0].startswith("FLAG")
    assert not render_prompts([state], tok)[0].startswith("FLAG")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    sampler = TransformersSampler(model, tokenizer=tok, chat_template_kwargs={"flag": True})
    res = sampler.sample([Prompt(state.context, state.tools)], __import__("pivotrl").sampling.SamplingParams(1, 0.0, 1.0, 1))
    flagged = len(tok(render_prompt(tok, Prompt(state.context, state.tools), None, {"flag": True}),
                      add_special_tokens=False)["input_ids"])
    assert res[0].prompt_tokens == flagged


def test_pivots_too_long_for_the_context_are_skipped_and_counted(tmp_path, tiny_model, sample_states):
    from pivotrl.train.common import render_prompts

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(tok(t)["input_ids"]) for t in render_prompts(sample_states[:8], tok)]
    limit = sorted(lengths)[3]
    run = tmp_path / "run"
    result = train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=1,
                                 max_prompt_length=limit), train_states=sample_states[:8], eval_states=[])
    data = next(r for r in read_ledger(run) if r["kind"] == "data")
    assert data["skipped_long_prompts"] == sum(n > limit for n in lengths) > 0
    assert result["train_states"] == data["train_states"] == sum(n <= limit for n in lengths)


def test_domain_weights_set_the_mix_the_trainer_samples(tmp_path, tiny_model, sample_states):
    """A JSON flag value (as from the CLI) becomes the weights; the ledger records the stream's mix."""
    import dataclasses

    states = [dataclasses.replace(s, domain="a" if i < 12 else "b") for i, s in enumerate(sample_states[:16])]
    run = tmp_path / "run"
    train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=1,
                        domain_weights='{"a": 1, "b": 3}'), train_states=states, eval_states=[])
    data = next(r for r in read_ledger(run) if r["kind"] == "data")
    assert data["pivots_by_domain"] == {"a": 12, "b": 4}
    assert data["stream_by_domain"] == {"a": 4, "b": 12}
    with pytest.raises(DataError, match="domain_weights must be a JSON object"):
        small(model=tiny_model, output_dir=str(run), domain_weights="[1, 2]")


def test_e2e_tools_fail_as_evaluation_shows_it_and_keep_their_schema():
    """TRL would hand the policy {"error": ...}; evaluation shows "Error: ...": training sees the latter."""
    from transformers.utils import get_json_schema

    from pivotrl.eval.episodes import call_tool, environment_tools
    from pivotrl.lab.domains.tooluse import StoreEnv
    from pivotrl.train.e2e import wrap_environment

    wrapped = wrap_environment(StoreEnv)()
    wrapped.reset(task=json.dumps({"users": [["U1", "Ada Kim", "12345"]], "orders": [], "name": "Ada Kim"}))
    plain = StoreEnv()
    plain.reset(users=[["U1", "Ada Kim", "12345"]], orders=[], name="Ada Kim")
    assert wrapped.find_user(name="Ada Kim", zip="99999") == call_tool(plain, "find_user", {"name": "Ada Kim", "zip": "99999"})
    assert wrapped.find_user(name="Ada Kim", zip="99999").startswith("Error: no such user")
    assert wrapped.cancel_order(order="x").startswith("Error: bad arguments for cancel_order")
    assert wrapped.find_user(name="Ada Kim", zip="12345") == "U1"
    assert [get_json_schema(getattr(wrapped, n)) for n in ("ask_user", "find_user")] == \
        [t for t in environment_tools(plain) if t["function"]["name"] in ("ask_user", "find_user")]
    assert E2EConfig(model="m", environment="x").mask_truncated_completions is True


def test_group_micro_batches_give_the_update_of_the_whole_batch(tmp_path, tiny_model, sample_states, monkeypatch):
    """Same samples, same gradient (SGD, no clipping, so the update is lr x gradient), one micro-batch
    per group: trimming padding, splitting the loss and running a group's shared prompt once
    (without gradient checkpointing) change nothing but the cost."""
    import pivotrl.train.group_batches as group_batches
    from pivotrl.train.common import render_prompts

    shared_calls = []
    real = group_batches.shared_prompt_logps
    monkeypatch.setattr(group_batches, "shared_prompt_logps", lambda *a, **k: shared_calls.append(1) or real(*a, **k))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(ids) for ids in tok(render_prompts(sample_states, tok))["input_ids"]]
    states = [sample_states[lengths.index(min(lengths))], sample_states[lengths.index(max(lengths))]]
    assert max(lengths) > min(lengths) + 20  # padding to remove
    runs = {}
    for name, grouped, checkpointing in (("plain", False, True), ("grouped", True, True), ("shared", True, False)):
        run = tmp_path / name
        cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=1,
                    num_generations=4, max_completion_length=6, optim="sgd", learning_rate=1.0,
                    max_grad_norm=1e9, group_micro_batches=grouped, gradient_checkpointing=checkpointing)
        assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.generation_batch_size) == \
            ((4, 2, 8) if grouped else (8, 1, 8))
        shared_calls.clear()
        train_pivotrl(cfg, train_states=states, eval_states=[])
        assert len(shared_calls) == (2 if name == "shared" else 0)  # one per group
        step = [r for r in read_ledger(run) if r["kind"] == "step"]
        assert [r["rollout_turns"] for r in step] == [8]
        runs[name] = weights(run / "final"), step[0]
    base, (plain, plain_step) = weights(tiny_model), runs["plain"]
    assert plain_step["frac_reward_zero_std"] < 1 and plain_step["grad_norm"] > 0  # a real update
    for name in ("grouped", "shared"):
        other, other_step = runs[name]
        assert other_step["grad_norm"] == pytest.approx(plain_step["grad_norm"], rel=1e-4), name
        for key in plain:
            delta = plain[key] - base[key]
            assert torch.allclose(other[key] - base[key], delta, atol=1e-5 + 1e-3 * delta.abs().max().item()), (name, key)


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path, tiny_model, sample_states):
    """One pivot a micro-batch, accumulated over two (as configs/pivotrl.yaml does with 4): with TRL's
    default loss (`dapo`, normalised by the tokens of the generation batch) the step is the whole
    batch's token mean, as one micro-batch of both pivots gives. With steps_per_generation fixed to 1
    it was a mean of per-micro-batch token means (and each micro-batch sampled on its own)."""
    states = sample_states[:2]
    runs = {}
    for name, prompts, accumulate in (("whole", 2, 1), ("accumulated", 1, 2)):
        run = tmp_path / name
        cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:vowel_share", max_steps=1,
                    num_generations=4, prompts_per_step=prompts, gradient_accumulation_steps=accumulate,
                    max_completion_length=6, optim="sgd", learning_rate=1.0, max_grad_norm=1e9)
        assert cfg.loss_type == "dapo" and cfg.steps_per_generation == accumulate  # TRL's default: one generation a step
        train_pivotrl(cfg, train_states=states, eval_states=[])
        runs[name] = weights(run / "final")
    base, whole = weights(tiny_model), runs["whole"]
    assert any(not torch.equal(whole[k], base[k]) for k in base)  # a real update
    for key in whole:
        delta = whole[key] - base[key]
        assert torch.allclose(runs["accumulated"][key] - base[key], delta, atol=1e-6 + 1e-3 * delta.abs().max().item()), key


OPTIONS = st.fixed_dictionaries({
    "loss_type": st.sampled_from(["grpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo"]),
    "beta": st.sampled_from([0.0, 0.04]),
    "scale_rewards": st.sampled_from(["group", "batch", "none"]),
    "epsilon_high": st.sampled_from([0.2, 0.28]),
    "sequence_level": st.booleans(),
    "num_generations": st.sampled_from([2, 4]),
})


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(options=OPTIONS)
def test_group_micro_batches_give_trls_update_under_every_option_they_accept(tmp_path_factory, tiny_model,
                                                                            sample_states, options):
    """Over TRL's loss types and the options that shape the loss (KL, reward scaling, clipping,
    sequence-level importance ratios, group size): one group per micro-batch, its context run once,
    gives the gradient of TRL's whole-batch path for the same samples."""
    options = dict(options)
    level = "sequence" if options.pop("sequence_level") or options["loss_type"] == "luspo" else "token"
    if level == "sequence" and options["loss_type"] in ("dr_grpo", "dapo", "cispo"):
        level = "token"  # TRL refuses sequence-level ratios for these
    norms = {}
    for name, grouped in (("plain", False), ("grouped", True)):
        run = tmp_path_factory.mktemp(name)
        cfg = small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:vowel_share", max_steps=1,
                    max_completion_length=5, optim="sgd", learning_rate=1.0, max_grad_norm=1e9,
                    importance_sampling_level=level, group_micro_batches=grouped, gradient_checkpointing=not grouped,
                    **options)
        train_pivotrl(cfg, train_states=sample_states[:2], eval_states=[])
        step = [r for r in read_ledger(run) if r["kind"] == "step"][0]
        norms[name] = step["grad_norm"], weights(run / "final")
    (plain, plain_w), (grouped, grouped_w) = norms["plain"], norms["grouped"]
    assert plain > 1e-4, options  # a real update to compare
    assert grouped == pytest.approx(plain, rel=1e-4), options
    for key in plain_w:
        assert torch.allclose(grouped_w[key], plain_w[key], atol=1e-6), (options, key)


@given(st.data())
def test_trim_padding_keeps_every_real_token(data):
    from pivotrl.train.group_batches import trim_padding

    rows, plen, clen = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    prompt_real = [data.draw(st.integers(0, plen)) for _ in range(rows)]  # left-padded
    completion_real = [data.draw(st.integers(0, clen)) for _ in range(rows)]  # right-padded
    prompt_mask = torch.tensor([[0] * (plen - n) + [1] * n for n in prompt_real])
    completion_mask = torch.tensor([[1] * n + [0] * (clen - n) for n in completion_real])
    batch = {"prompt_ids": torch.arange(rows * plen).view(rows, plen), "prompt_mask": prompt_mask,
             "completion_ids": torch.arange(rows * clen).view(rows, clen), "completion_mask": completion_mask,
             "old_per_token_logps": torch.rand(rows, clen), "advantages": torch.rand(rows),
             "num_items_in_batch": torch.tensor(7)}
    out = trim_padding(batch)
    width = max(max(completion_real), 1)  # all masked: one (masked) column stays
    assert out["prompt_ids"].shape[1] == max(prompt_real) and out["completion_ids"].shape[1] == width
    assert out["old_per_token_logps"].shape == out["completion_ids"].shape
    # the kept columns are the real tokens' own, in place
    assert torch.equal(out["prompt_ids"], batch["prompt_ids"][:, plen - max(prompt_real):])
    assert torch.equal(out["completion_mask"], completion_mask[:, :width])
    assert out["prompt_mask"].sum() == prompt_mask.sum() and out["completion_mask"].sum() == completion_mask.sum()
    assert torch.equal(out["advantages"], batch["advantages"]) and out["num_items_in_batch"] == 7


def test_group_micro_batches_need_whole_groups(tiny_model):
    with pytest.raises(DataError, match="multiple of num_generations"):
        small(model=tiny_model, num_generations=4, prompts_per_step=None, per_device_train_batch_size=6,
              group_micro_batches=True)


@pytest.mark.parametrize("option", [{"loss_type": "bnpo"}, {"top_entropy_quantile": 0.5}, {"entropy_coef": 0.01}])
def test_group_micro_batches_refuse_options_normalised_per_micro_batch(tiny_model, option):
    with pytest.raises(DataError, match="cannot reproduce TRL's update"):
        small(model=tiny_model, group_micro_batches=True, **option)
    small(model=tiny_model, **option)  # without group_micro_batches: TRL's own path, accepted


def test_group_micro_batches_train_when_every_completion_is_masked(tmp_path, tiny_model, sample_states):
    """A random model never ends a 3-token action: with mask_truncated_completions every completion
    of every group is masked; the trimmed micro-batch keeps one masked column and the step runs
    (gradient checkpointing on, TRL's default path, where an empty slice used to fail)."""
    run = tmp_path / "run"
    train_pivotrl(small(model=tiny_model, output_dir=str(run), verifier=f"{__name__}:prefers_vowel", max_steps=2,
                        max_completion_length=3, mask_truncated_completions=True, group_micro_batches=True,
                        gradient_checkpointing=True), train_states=sample_states[:4], eval_states=[])
    steps = [r for r in read_ledger(run) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2] and all(r["grad_norm"] == 0.0 for r in steps)


def test_shared_prefill_rollouts_are_trls_token_for_token(tiny_model, sample_states):
    """Each pivot's context prefilled once for its samples (share_prefill) gives TRL's own rollouts:
    greedy, identical token for token; sampled, the same cut after the first end token."""
    from trl import GRPOTrainer

    from pivotrl.train.common import grpo_dataset
    from pivotrl.train.shared_generation import SharedPrefillGRPOTrainer, whole_groups

    tok = AutoTokenizer.from_pretrained(tiny_model)
    states = sample_states[:3]
    cfg = small(model=tiny_model, output_dir="/tmp/unused-shared-prefill", num_generations=4, prompts_per_step=3,
                max_completion_length=12, max_steps=1)
    trainer = SharedPrefillGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=cfg,
                                       processing_class=tok, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                                       train_dataset=grpo_dataset(states, tok))
    prompt_ids = [ids for ids in tok(list(grpo_dataset(states, tok)["prompt"]))["input_ids"] for _ in range(4)]
    assert whole_groups(prompt_ids, 4) is not None and whole_groups(prompt_ids[1:] + prompt_ids[:1], 4) is None
    trainer.generation_config.do_sample = False
    ours, _ = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    theirs, _ = GRPOTrainer._generate_single_turn(trainer, prompt_ids, None, {}, 4)
    assert ours == theirs and len(ours) == 12
    trainer.generation_config.do_sample = True
    sampled, _ = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    ends = set(trainer.eos_token_ids)
    assert len(sampled) == 12 and all(0 < len(c) <= 12 for c in sampled)
    assert all(c[-1] in ends or len(c) == 12 for c in sampled) and all(not ends & set(c[:-1]) for c in sampled)
    assert len({tuple(c) for c in sampled[:4]}) > 1  # a group's samples differ: each drew its own tokens


def test_the_step_memory_plan_counts_exactly_and_shards(tiny_model):
    """`pivotrl plan`: the parameter count is the model's own; weights, gradients and AdamW hold 16 bytes
    a parameter, divided by the devices under ZeRO-3/FSDP; the README's 8B recipes fit where plain DDP
    does not (the 122 GiB of weights, gradients and Adam that DDP holds per GPU for an 8B model)."""
    from transformers import AutoConfig, Qwen3Config

    from pivotrl.train.plan import GiB, count_parameters, step_memory

    config = AutoConfig.from_pretrained(tiny_model)
    total, largest = count_parameters(config)
    assert total == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters()) > largest
    one = step_memory(config, sequences=8, prompt_tokens=512, completion_tokens=64)
    assert one.weights + one.gradients + one.optimizer == 16 * total
    sharded = step_memory(config, sequences=8, prompt_tokens=512, completion_tokens=64, devices=4, sharding="zero3")
    assert sharded.gradients + sharded.optimizer == 12 * total / 4 and sharded.weights == 4 * total / 4 + 4 * largest
    assert step_memory(config, sequences=8, prompt_tokens=512, completion_tokens=64,
                       gradient_checkpointing=False).activations > one.activations
    qwen3_8b = Qwen3Config(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False)
    recipe = dict(sequences=16, prompt_tokens=2048, completion_tokens=1024, use_vllm=True, device_bytes=80 * GiB)
    ddp = step_memory(qwen3_8b, devices=8, vllm_share=0.2, **recipe)
    assert (ddp.weights + ddp.gradients + ddp.optimizer) / GiB > 120 and ddp.total > 80 * GiB
    assert step_memory(qwen3_8b, devices=8, sharding="zero3", vllm_share=0.2, **recipe).total < 80 * GiB
    assert step_memory(qwen3_8b, lora=True, vllm_share=0.3, **recipe).total < 80 * GiB


def test_plan_command_and_the_accelerate_configs(tiny_model):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    r = runner.invoke(app, ["plan", "--model", tiny_model, "--prompts_per_step", "2", "--num_generations", "4",
                            "--max_completion_length", "32", "--max_prompt_length", "256"])
    assert r.exit_code == 0, r.output
    assert "weights" in r.output and "per GPU" in r.output
    r = runner.invoke(app, ["plan", "--model", tiny_model, "--device-gib", "0.0001"])
    assert r.exit_code == 1 and "does not fit" in r.output
    root = Path(__file__).parent.parent / "configs"
    zero3 = load_config_from_file(str(root / "accelerate_zero3.yaml"))
    fsdp = load_config_from_file(str(root / "accelerate_fsdp.yaml"))
    assert zero3.deepspeed_config["zero_stage"] == 3 and zero3.num_processes == 8
    assert fsdp.fsdp_config["fsdp_version"] == 2 and str(fsdp.distributed_type).endswith("FSDP")


def test_the_shared_prompt_loss_is_taken_only_in_one_process_on_a_plain_module():
    """Running a group's prompt once is shown equal to TRL's update in one process only; a DeepSpeed
    engine, an FSDP module (its own activation checkpointing) or DDP keeps TRL's path."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from pivotrl.train.group_batches import shared_prompt_applies

    module = torch.nn.Linear(2, 2)
    assert shared_prompt_applies(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1), module)
    for kind in (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        assert not shared_prompt_applies(SimpleNamespace(distributed_type=kind, num_processes=1), module), kind
    assert not shared_prompt_applies(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=2), module)


def test_a_split_file_given_as_heldout_finds_the_states_extract_wrote_beside_it(tmp_path):
    """`--heldout X.heldout.json` (the split `extract` wrote) evaluates on `X.heldout.states.jsonl`
    beside it, wherever the training data lives; it warned and evaluated nothing before."""
    from pivotrl.data.sample import generate_sample_trajectories
    from pivotrl.eval.heldout import resolve_states
    from pivotrl.pivots.state import write_states

    states = extract_states(generate_sample_trajectories(6, seed=0))
    held = {states[0].trajectory_id}
    write_states(tmp_path / "x.jsonl.heldout.states.jsonl", states)
    found, source = resolve_states(None, tmp_path / "elsewhere" / "pivots.jsonl", held, [], "none",
                                   heldout=str(tmp_path / "x.jsonl.heldout.json"))
    assert source == str(tmp_path / "x.jsonl.heldout.states.jsonl")
    assert found and {s.trajectory_id for s in found} == held
    assert resolve_states(None, tmp_path / "elsewhere" / "pivots.jsonl", held, [], "none") == ([], "none")
