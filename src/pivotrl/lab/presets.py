"""The lab's arms and presets: what `pivotrl lab run --preset NAME` trains, for how long, and how
each choice is made (on the dev split; the test split is evaluated once per arm at the end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pivotrl.lab.evaluate import EvalConfig

ARMS = ("sft", "pivotrl", "e2e", "pivotrl_no_filter", "pivotrl_exact", "sft_pivotrl", "sft_e2e", "pivotrl_refresh")
LABELS = {"base": "Base", "sft": "SFT", "pivotrl": "PivotRL", "e2e": "E2E RL",
          "pivotrl_no_filter": "PivotRL, no pivot filter", "pivotrl_exact": "PivotRL, exact-match reward",
          "sft_pivotrl": "SFT then PivotRL", "sft_e2e": "SFT then E2E RL",
          "pivotrl_refresh": "PivotRL, refresh over the pool"}
AFTER_SFT = ("sft_pivotrl", "sft_e2e")  # arms that start from the same seed's SFT checkpoint
BALANCED = {"tooluse": 1.0, "terminal": 1.0, "search": 1.0, "code": 1.0}


@dataclass
class Preset:
    name: str
    seeds: list = field(default_factory=lambda: [0])
    arms: tuple = ARMS[:6]
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
    # The paper's data regime (issue 51; the `regime` preset). Off elsewhere: older presets rerun as they ran.
    data_per_seed: bool = False     # each seed draws its own trajectories (hence its own profile and pivots)
    sweep_seed: int | None = None   # the learning-rate sweep's seed (None: the first of `seeds`, reported too)
    # The production order: SFT, then PivotRL (and E2E RL) on a second draw as large, which SFT never
    # trained on; without it SFT then PivotRL profiles SFT's own training trajectories.
    production_order: bool = False
    sft_epochs: float = 100.0       # SFT's epoch cap (the wall-clock cap beside it)
    # PivotRL's cap in visits: it stops once it has drawn each pivot this many times on average
    # (steps x prompts_per_step / pivots); None: the wall-clock cap alone.
    pivot_visits_cap: float | None = None
    refresh_every: int = 50         # pivotrl_refresh: every N steps it re-profiles ...
    refresh_sample: int = 256       # ... a seeded sample of this many of all candidates (0: all of them)
    domain_dev_tasks: dict = field(default_factory=dict)  # dev episodes of a domain that needs more (repo's claim 3)
    gate_on_data: bool = False      # the regime gate recomputed on each seed's profile and the dev tasks (`gate-sN`)
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
                       dev_tasks=self.domain_dev_tasks.get(name, self.dev_tasks), eval=replace(self.eval, domains=(name,)))

    def learning_rates_of(self, arm: str) -> list[float]:
        """An arm's learning rates: its own entry, else "sft" for SFT and "rl" for the GRPO arms."""
        return list(self.learning_rates.get(arm) or self.learning_rates["sft" if arm == "sft" else "rl"])

    @property
    def first_seed(self) -> int:
        """The seed the learning-rate sweeps run with."""
        return self.seeds[0] if self.sweep_seed is None else self.sweep_seed

    def run_seeds(self, arm: str, chosen: float | None) -> list[tuple[float, int]]:
        """(learning rate, seed) of an arm's runs: the sweep (or its single rate) on `first_seed`, then
        the chosen rate on every reported seed it has not run on."""
        runs = [(lr, self.first_seed) for lr in self.learning_rates_of(arm)]
        if chosen is not None:
            runs += [(chosen, s) for s in self.seeds if (chosen, s) not in runs]
        return runs


PRESETS = {
    # The paper's protocol (issue 24), registered before its runs, on a base that passes the regime
    # gate: one model per domain (`lab run --preset paper --domain NAME`), SFT and PivotRL on the same
    # trajectories, each swept over three learning rates on dev (seed 0) and kept at its best dev
    # checkpoint, then 5 seeds (the power estimate in results/lab-v3/README.md); SFT then PivotRL; generous caps with
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
    # The paper's data regime (issue 51), registered in results/lab-regime/REGISTRATION.md before any run:
    # per domain (`--domain NAME`), each seed draws its own trajectories (enough that PivotRL visits each
    # pivot at most ~2 times at its kept checkpoint, 4 at its cap; SFT at most 3 epochs), the sweep on
    # seed 100 (not reported), SFT then PivotRL on a second draw SFT never trained on, dev and test tasks
    # of bug templates no training task plants, OOD items no base pretrained on; refresh over the whole
    # pool where PivotRL trailed SFT; E2E RL from the base and from SFT on repo with 200 dev episodes.
    "regime": Preset("regime", seeds=[1, 2, 3, 4, 5], sweep_seed=100, data_per_seed=True, production_order=True,
                     arms=("sft", "pivotrl", "sft_pivotrl"),
                     trajectories={"search": 2200, "tooluse": 2100, "code": 5500, "repo": 400},
                     seconds_per_arm=1800.0, learning_rates={"sft": [5e-5, 2e-4, 5e-4], "rl": [2e-5, 5e-5, 2e-4]},
                     sft_epochs=3.0, pivot_visits_cap=4.0, refresh_every=50, refresh_sample=256, gate_on_data=True,
                     fast_grpo=True, dev_tasks=50, dev_evals=12, patience=4, dev_ties_within=1, e2e_max_turns=30,
                     e2e_max_completion_length=1792, domain_dev_tasks={"repo": 200},
                     domain_arms={"tooluse": ("pivotrl_no_filter", "pivotrl_exact", "pivotrl_refresh"),
                                  "search": ("pivotrl_refresh",), "code": ("pivotrl_refresh",),
                                  "repo": ("e2e", "sft_e2e")},
                     eval=EvalConfig(tasks_per_domain=200, ood_per_task=50, variant_tasks=100, next_action_states=50,
                                     unseen_templates=True, unseen_ood=True)),
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
                   refresh_every=1, refresh_sample=2,
                   num_generations=2, prompts_per_step=1, max_completion_length=8, e2e_prompts_per_step=1,
                   fast_grpo=True,
                   e2e_max_completion_length=48, e2e_max_turns=2, dev_tasks=1, dev_evals=1,
                   eval=EvalConfig(tasks_per_domain=1, ood_per_task=1, variant_tasks=1, next_action_states=0,
                                   max_tokens=8)),
}
