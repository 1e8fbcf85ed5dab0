"""The options pivotrl's trainers add to TRL's configs, in a module that imports nothing heavy (the
CLI's help reads them). Each trainer's config is TRL's config class with these on top:
`PivotRLConfig(PivotRLOptions, PivotRLRecipe)`, `SFTRunConfig(SFTOptions, SFTConfig)`,
`E2EConfig(E2EOptions, PivotRLRecipe)` (`PivotRLRecipe`: `GRPOConfig` with the paper's recipe
defaults), so every TRL knob works from YAML and flags unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

from pivotrl.sampling.base import GENERATION_BUDGET

CPU_BF16_HELP = ("Without a GPU: train in bf16 autocast (float32 master weights) where the CPU has native bf16 "
                 "instructions (AVX512-BF16, AMX); float32 elsewhere.")


@dataclass
class EvalOptions:
    """The held-out evaluation every trainer runs alike (`pivotrl.eval.heldout`): next-action accuracy on
    held-out states as `eval_accuracy`, and with an environment the success of held-out episodes as
    `eval_success`, at step 0, every `eval_every` steps and at the end."""

    eval_states: str | None = field(default=None, metadata={
        "help": "Held-out states (JSONL); default: the STATES.heldout.states.jsonl `extract` wrote beside the data. "
                "Their trajectories are never trained on."})
    eval_every: int = field(default=50, metadata={"help": "Evaluate every N steps (0: at the start and end only)."})
    eval_max_states: int = field(default=200, metadata={"help": "A seeded sample of at most N held-out states."})
    eval_tasks: str | None = field(default=None, metadata={"help": "Held-out episode tasks (JSONL of {'prompt': ...})."})
    eval_environment: str | None = field(default=None, metadata={
        "help": "The environment the held-out tasks are played in (a registered name or module:Class)."})
    eval_max_tasks: int = field(default=100, metadata={"help": "At most N held-out episodes."})
    eval_max_turns: int = field(default=8, metadata={"help": "Model turns per held-out episode at most."})


@dataclass
class RunFolderOptions:
    """What happens when output_dir already holds a run (`pivotrl.train.common.claim_run_folder`)."""

    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite: bool = field(default=False, metadata={
        "help": "Start over in an output_dir that holds a run (its ledger, checkpoints and final model are removed)."})


@dataclass
class PivotRLOptions(RunFolderOptions, EvalOptions):
    """What PivotRL adds to TRL's `GRPOConfig` (every GRPOConfig field works too, from YAML or flags)."""

    model: str = field(default="", metadata={"help": "Policy to train: a local directory or a hub id."})
    pivots: str = field(default="", metadata={"help": "States JSONL from `select`, NeMo Gym rows, or a profile."})
    verifier: str = field(default="tool_call", metadata={"help": "Registered verifier or module:callable."})
    verifier_options: dict | str | None = field(default_factory=dict, metadata={"help": "Verifier options (JSON)."})
    rule: str = field(default="pivot", metadata={"help": "Selection rule when `pivots` is a profile."})
    lambda_diff: float = field(default=0.75, metadata={"help": "Pivot rule: keep mean reward below this."})
    heldout: str | None = field(default=None, metadata={"help": "Held-out trajectory ids (default: PIVOTS.heldout.json)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share held out when no split file exists."})
    prompts_per_step: int | None = field(default=None, metadata={
        "help": "Pivots per device and step; sets per_device_train_batch_size to this x num_generations."})
    max_seconds: float | None = field(default=None, metadata={"help": "Wall-clock budget of the training."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of every weight."})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Default: all linear layers."})
    refresh_every: int = field(default=0, metadata={"help": "Re-profile and re-select the pool every N steps."})
    refresh_k: int = 8
    refresh_sample: int = field(default=0, metadata={
        "help": "Re-profile a seeded sample of this many pool states at each refresh (0: the whole pool); "
                "the others keep their place in or out of the active set."})
    max_visits_per_pivot: float | None = field(default=None, metadata={
        "help": "Stop after about N visits per training pivot (the paper's regime sees each about once; with "
                "refresh_every, per pivot of the starting active set): sets max_steps to ceil(N x pivots / "
                "pivots per optimizer step over all processes)."})
    domain_weights: dict | str | None = field(default=None, metadata={
        "help": "Pivot sampling weight per domain (JSON, e.g. '{\"code\": 1, \"search\": 1}'): each domain's share "
                "of the training stream; default: the data's own shares."})
    chat_template: str | None = field(default=None, metadata={"help": "A Jinja chat template file."})
    max_prompt_length: int | None = field(default=None, metadata={
        "help": "Skip (and count in the ledger) pivots whose prompt is longer (default: the model's context "
                "minus max_completion_length)."})
    cpu_bf16: bool = field(default=False, metadata={"help": CPU_BF16_HELP})
    group_micro_batches: bool = field(default=False, metadata={
        "help": "Compute the loss one group (one pivot's num_generations samples) at a time, each cut to its own "
                "length, and, with gradient_checkpointing off, the group's shared prompt run once: the same "
                "update for less compute (most when prompts are long and completions short)."})
    share_prefill: bool = field(default=True, metadata={
        "help": "Without vLLM: generate each pivot's samples from one prefill of its context (its key/value cache "
                "repeated), not one per sample as TRL does; the same sampling, far less compute at long contexts."})
    profile_cost: str | None = field(default=None, metadata={"help": "Profile meta JSON charged to the ledger."})
    score_truncated: bool = field(default=False, metadata={
        "help": "Score completions cut by max_completion_length as they are (default: 0, reason 'truncated': a cut "
                "action, e.g. one stopped mid-reasoning, is no action); for rewards that judge a prefix."})
    collapse_patience: int = 20
    force: bool = field(default=False, metadata={
        "help": "Launch on a GPU even when `pivotrl plan` predicts that the step, its evaluation or a colocated "
                "vLLM will not fit (refused otherwise, with the numbers and the nearest recipe that fits)."})


@dataclass
class SFTOptions(RunFolderOptions, EvalOptions):
    """What the SFT baseline adds to TRL's `SFTConfig` (every SFTConfig field works too)."""

    model: str = field(default="", metadata={"help": "Policy to train: a local directory or a hub id."})
    trajectories: str = field(default="", metadata={"help": "OpenAI / ShareGPT JSONL or HF dataset, as `extract` reads."})
    verifier: str = field(default="tool_call", metadata={"help": "For the next-action evaluation only."})
    verifier_options: dict | str | None = field(default_factory=dict, metadata={"help": "Verifier options (JSON)."})
    heldout: str | None = field(default=None, metadata={"help": "Held-out trajectory ids (e.g. STATES.heldout.json)."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Share held out when no split file exists."})
    eval_max_tokens: int = field(default=GENERATION_BUDGET, metadata={
        "help": "Token budget of an evaluated action (as `max_tokens` of profile, `max_completion_length` of train)."})
    chat_template_kwargs: dict | str | None = field(default=None, metadata={
        "help": "Chat template options (JSON), e.g. {\"enable_thinking\": false}, for training and evaluation alike "
                "(as train's); the template file itself is TRL's chat_template_path."})
    max_seconds: float | None = field(default=None, metadata={"help": "Wall-clock budget of the training."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of every weight."})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Default: all linear layers."})
    cpu_bf16: bool = field(default=False, metadata={"help": CPU_BF16_HELP})


@dataclass
class E2EOptions(RunFolderOptions, EvalOptions):
    """What the end-to-end RL baseline adds to TRL's `GRPOConfig` (every GRPOConfig field works too;
    `max_tool_calling_iterations` is the episode's turn limit)."""

    model: str = field(default="", metadata={"help": "Policy to train: a local directory or a hub id."})
    tasks: str = field(default="", metadata={"help": "JSONL of {'prompt': [...], ...reset kwargs}."})
    environment: str = field(default="", metadata={
        "help": "A registered environment name (entry-point group pivotrl.environments) or module:Class."})
    heldout: str | None = field(default=None, metadata={"help": "Held-out trajectory ids (default: TASKS.heldout.json)."})
    verifier: str = field(default="tool_call", metadata={"help": "Scores next actions on eval_states."})
    verifier_options: dict | str | None = field(default_factory=dict, metadata={"help": "Verifier options (JSON)."})
    prompts_per_step: int | None = field(default=None, metadata={
        "help": "Tasks per device and step; sets per_device_train_batch_size to this x num_generations."})
    max_seconds: float | None = field(default=None, metadata={"help": "Wall-clock budget of the training."})
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_target_modules: list[str] | None = None
    cpu_bf16: bool = field(default=False, metadata={"help": CPU_BF16_HELP})
    collapse_patience: int = 20
