"""The lab's arms and presets: what `pivotrl lab run --preset NAME` trains, for how long, and how
each choice is made (on the dev split; the test split is evaluated once per arm at the end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pivotrl.lab.evaluate import EvalConfig

ARMS = ("sft", "pivotrl", "e2e", "pivotrl_no_filter", "pivotrl_exact", "sft_pivotrl")
LABELS = {"base": "Base", "sft": "SFT", "pivotrl": "PivotRL", "e2e": "E2E RL",
          "pivotrl_no_filter": "PivotRL, no pivot filter", "pivotrl_exact": "PivotRL, exact-match reward",
          "sft_pivotrl": "SFT then PivotRL"}
BALANCED = {"tooluse": 1.0, "terminal": 1.0, "search": 1.0, "code": 1.0}


@dataclass
class Preset:
    name: str
    seeds: list = field(default_factory=lambda: [0])
    arms: tuple = ARMS
    trajectories: dict = field(default_factory=lambda: {"tooluse": 400, "terminal": 400, "search": 400, "code": 150})
    profile_k: int = 8
    lambda_diff: float = 0.75
    seconds_per_arm: float = 300.0     # each arm's cap; it keeps its best dev checkpoint within it
    # Learning rates per arm: several = a sweep on dev with the first seed, the best then used for
    # every seed; one = fixed (taken from a preset that swept it).
    learning_rates: dict = field(default_factory=lambda: {"sft": [2e-4], "rl": [5e-5]})
    num_generations: int = 8
    prompts_per_step: int = 4
    max_completion_length: int = 64
    e2e_prompts_per_step: int = 2
    e2e_max_completion_length: int = 384
    e2e_max_turns: int = 6
    domain_weights: dict | None = None  # pivot sampling per domain (None: the data's own shares)
    # The GRPO arms' loss one group at a time with its shared prompt run once (`group_micro_batches`,
    # gradient checkpointing off, which a tiny model does not need): the same update, 1.9-2.3x the
    # steps/s here. Off in the full preset, whose committed results (results/lab-v2/) came before it.
    fast_grpo: bool = False
    dev_tasks: int = 10                # dev episodes per domain at each dev evaluation
    dev_evals: int = 4                 # dev evaluations spread over the cap (plus one at step 0)
    patience: int = 0                  # stop an arm after this many dev evaluations without a new best (0: never)
    # Keep the latest checkpoint within this many dev episodes of the best (0: the best, the earliest
    # of equals). On a small dev set one episode is noise, and the more trained checkpoint is kept.
    dev_ties_within: int = 0
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Arms a domain adds when it trains alone (`for_domain`): the paper's ablations are on tau2 only,
    # its E2E RL comparison on SWE-Bench only.
    domain_arms: dict = field(default_factory=dict)

    @property
    def domains(self) -> tuple:
        """The domains this preset trains and evaluates on: those it has trajectories for."""
        return tuple(self.trajectories)

    def for_domain(self, name: str) -> "Preset":
        """The same preset on one domain (the paper trains one model per domain): that domain's
        trajectories (the code domain's count for one the preset does not list), its dev and test
        episodes, no mix to weight."""
        from dataclasses import replace

        from pivotrl.lab.domains.base import get_domain

        get_domain(name)  # a clear error for an unknown name
        count = self.trajectories.get(name) or self.trajectories.get("code") or min(self.trajectories.values())
        arms = self.arms + tuple(a for a in self.domain_arms.get(name, ()) if a not in self.arms)
        return replace(self, name=f"{self.name}/{name}", trajectories={name: count}, domain_weights=None, arms=arms,
                       eval=replace(self.eval, domains=(name,)))

    def learning_rates_of(self, arm: str) -> list[float]:
        """An arm's learning rates: its own entry, else "sft" for SFT and "rl" for the GRPO arms."""
        return list(self.learning_rates.get(arm) or self.learning_rates["sft" if arm == "sft" else "rl"])


PRESETS = {
    # The paper's protocol (issue 24), registered before its runs, on a base that passes the regime
    # gate: one model per domain (`lab run --preset paper --domain NAME`), SFT and PivotRL on the same
    # trajectories, each swept over three learning rates on dev (seed 0) and kept at its best dev
    # checkpoint, then 5 seeds (the power estimate in results/lab/README.md); SFT then PivotRL; generous caps with
    # patience (an arm stops after 4 dev evaluations without a new best), PivotRL on the fast GRPO
    # path; the filter and exact-match ablations on tooluse; E2E RL on the long-horizon repo domain,
    # with dev sets large enough that three standard errors are ~15 points at 20% success.
    "paper": Preset("paper", seeds=[0, 1, 2, 3, 4], arms=("sft", "pivotrl", "sft_pivotrl"),
                    trajectories={"tooluse": 150, "terminal": 150, "search": 150, "code": 60, "repo": 60},
                    seconds_per_arm=1800.0, learning_rates={"sft": [5e-5, 2e-4, 5e-4], "rl": [2e-5, 5e-5, 2e-4]},
                    fast_grpo=True, dev_tasks=50, dev_evals=12, patience=4, dev_ties_within=1, e2e_max_turns=30,
                    e2e_max_completion_length=1792,  # a whole repo episode's turns and tool outputs (TRL's bound)
                    domain_arms={"tooluse": ("pivotrl_no_filter", "pivotrl_exact"), "repo": ("e2e",)},
                    eval=EvalConfig(tasks_per_domain=200, ood_per_task=50, variant_tasks=100, next_action_states=50)),
    # Every arm swept over three learning rates on dev (seed 0), then three seeds at its best; two
    # workers (`lab run` started twice on one folder) share the stages (results/lab-v2/README.md).
    "full": Preset("full", seeds=[0, 1, 2], trajectories={"tooluse": 150, "terminal": 150, "search": 150, "code": 60},
                   seconds_per_arm=480.0, learning_rates={"sft": [5e-5, 2e-4, 5e-4], "rl": [2e-5, 5e-5, 2e-4]},
                   domain_weights=BALANCED, dev_tasks=15, dev_evals=6,
                   eval=EvalConfig(tasks_per_domain=200, ood_per_task=50, variant_tasks=100, next_action_states=50)),
    # SFT and PivotRL at the learning rates the full preset's sweeps chose, for 90 s each: enough for
    # the effect the full results show beyond noise at this size (SFT loses out-of-domain skills that
    # PivotRL keeps), measured on 100 OOD items; in-domain differences are noise at this size (docs/lab.md).
    # 24 dev episodes cannot tell checkpoints one episode apart: the later one is kept.
    "demo": Preset("demo", seeds=[0], arms=("sft", "pivotrl"),
                   trajectories={"tooluse": 40, "terminal": 40, "search": 40, "code": 20}, profile_k=4,
                   seconds_per_arm=90.0, learning_rates={"sft": [5e-4], "rl": [2e-5]},
                   domain_weights=BALANCED, fast_grpo=True, dev_tasks=6, dev_evals=3, dev_ties_within=1,
                   eval=EvalConfig(tasks_per_domain=15, ood_per_task=25, variant_tasks=8, next_action_states=0)),
    "tiny": Preset("tiny", seeds=[0], arms=ARMS, trajectories={"tooluse": 3, "terminal": 3, "search": 3, "code": 2},
                   # one arm sweeps (the dev choice between two rates), the others run once
                   profile_k=2, seconds_per_arm=4.0, learning_rates={"sft": [2e-4], "rl": [2e-4], "pivotrl": [5e-5, 2e-4]},
                   num_generations=2, prompts_per_step=1, max_completion_length=8, e2e_prompts_per_step=1,
                   fast_grpo=True,
                   e2e_max_completion_length=48, e2e_max_turns=2, dev_tasks=1, dev_evals=1,
                   eval=EvalConfig(tasks_per_domain=1, ood_per_task=1, variant_tasks=1, next_action_states=0,
                                   max_tokens=8)),
}
