"""`dispatch`: choose a verifier per state, from config.

Rules, first that applies wins: the NeMo Gym agent of the row (`by_agent`), the state's domain
(`by_domain`), then, with `nemo_gym_agents` on, the verifier NVIDIA's pivot datasets are scored
with: by the row's agent name (`NEMO_GYM_AGENTS`), or, for a row that names no agent, by its
layout (an `expected_answer` with `metadata.harness` is a Terminal pivot row: `terminus`); then the
reference action's kind (`by_action`: `tool_calls` or `message`), else `default`. So `select`,
`train` and `verify` on a mix of NVIDIA's pivot datasets and rollouts score each row as NeMo Gym
does. A row that names an agent we do not know, or that has an `expected_answer` but no harness and
no agent, is refused rather than guessed at: `check(states)` (run by `verify`, `profile` and `train`
before any work) stops the job naming it, and `score` gives it 0 (`unroutable`); route it with
`by_agent` or `by_domain`. `options` configures the verifiers picked by agent or layout, e.g.
`{"terminus": {"judge": "my_pkg:judge"}, "swe_pivot": {"reward_mode": "continuous"}}`. Each entry
of the other rules is a verifier name or `{"name": ..., **options}`, e.g.

    {"default": "tool_call",
     "by_domain": {"terminal": "terminus", "swe": {"name": "tool_call", "word_count_similarity_threshold": 0.0}},
     "by_action": {"message": {"name": "string_similarity", "threshold": 0.6}}}
"""

from __future__ import annotations

from typing import Any

from pivotrl.errors import DataError
from pivotrl.rewards.base import Score, build_verifier, check_states, get_verifier, gym_extra, register_verifier, state_meta


class RoutingError(DataError):
    """No verifier is known for a state (a row of an unknown NeMo Gym agent, say)."""


# NeMo Gym agent names (the `agent_ref.name` of a row) -> our reproduction of its server's reward.
# Exact names first; then a name containing a key (agents are named after their resources server).
NEMO_GYM_AGENTS = {
    "single_step_tool_use_with_argument_comparison_agent": "tool_call",
    "swe_pivot_tool_simulation_agent": "swe_pivot",
}
NEMO_GYM_AGENT_PARTS = {"swe_pivot": "swe_pivot", "terminus": "terminus",
                        "tool_use_with_argument_comparison": "tool_call"}


def nemo_gym_verifier(agent: str | None) -> str | None:
    if not agent:
        return None
    if agent in NEMO_GYM_AGENTS:
        return NEMO_GYM_AGENTS[agent]
    return next((v for part, v in NEMO_GYM_AGENT_PARTS.items() if part in agent), None)


def agent_name(state) -> str | None:
    """The NeMo Gym agent named by the row a state came from (`agent_ref.name`), if any."""
    ref = gym_extra(state).get("agent_ref")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


def terminal_row(state) -> bool:
    """A Terminal pivot row: its reference is an `expected_answer` for a Terminus harness."""
    row = gym_extra(state)
    md = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    return ("expected_answer" in row or "expected_answer" in md) and "harness" in md


@register_verifier("dispatch")
class DispatchVerifier:
    def __init__(self, default: Any = "tool_call", by_domain: dict | None = None,
                 by_action: dict | None = None, by_agent: dict | None = None, nemo_gym_agents: bool = True,
                 options: dict | None = None):
        self.default = build_verifier(default)
        self.nemo_gym_agents = nemo_gym_agents
        self.options = dict(options or {})
        self._known: dict[str, Any] = {}
        self.by_domain = {k: build_verifier(v) for k, v in (by_domain or {}).items()}
        self.by_action = {k: build_verifier(v) for k, v in (by_action or {}).items()}
        self.by_agent = {k: build_verifier(v) for k, v in (by_agent or {}).items()}

    def choose(self, state):
        agent = agent_name(state)
        if agent in self.by_agent:
            return self.by_agent[agent]
        if isinstance(getattr(state, "domain", None), str) and state.domain in self.by_domain:
            return self.by_domain[state.domain]
        if self.nemo_gym_agents and "gym" in state_meta(state):
            known = self._nemo_gym_verifier(state, agent)
            if known:
                if known not in self._known:
                    self._known[known] = get_verifier(known, **self.options.get(known, {}))
                return self._known[known]
        return self.by_action.get(state.reference.kind, self.default)

    @staticmethod
    def _nemo_gym_verifier(state, agent: str | None) -> str | None:
        """The verifier NeMo Gym scores this row with; None for the row format's default agent (a
        tool-use row with `expected_action`); refused when the row leaves it unknown."""
        if agent:
            known = nemo_gym_verifier(agent)
            if known is None:
                raise RoutingError(f"no verifier is known for the NeMo Gym agent {agent!r}: route its rows with "
                                   f"dispatch's by_agent (e.g. {{\"{agent}\": \"tool_call\"}}) or by_domain, or "
                                   "pass --verifier NAME", record=getattr(state, "id", None))
            return known
        if terminal_row(state):
            return "terminus"
        gym = state_meta(state).get("gym")
        if not isinstance(gym, dict) or gym.get("expected_action") is None:
            raise RoutingError("a NeMo Gym row with neither an agent_ref nor an expected_action (nor a Terminus "
                               "harness in its metadata): route it with dispatch's by_domain, or pass --verifier NAME",
                               record=getattr(state, "id", None))
        return None

    def check(self, states, source: str | None = None) -> None:
        """Refuse, before any work, states that no rule routes, and let each chosen verifier check
        its own states (`pivotrl.rewards.check_states`)."""
        bad, chosen = [], {}
        for state in states:
            try:
                verifier = self.choose(state)
            except RoutingError as exc:
                bad.append(exc)
                continue
            chosen.setdefault(id(verifier), (verifier, []))[1].append(state)
        if bad:
            raise DataError(f"{len(bad)} state(s) have no verifier; the first: {bad[0]}", file=source)
        for verifier, routed in chosen.values():
            check_states(verifier, routed, source)

    def score(self, completion: Any, state) -> Score:
        try:
            verifier = self.choose(state)
        except RoutingError:  # refused up front by check(); a long run never stops on one state
            return Score(0.0, "unroutable")
        return verifier.score(completion, state)
