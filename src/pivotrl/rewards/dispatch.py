"""`dispatch`: choose a verifier per state, from config.

Rules, first that applies wins: the NeMo Gym agent of the row (`by_agent`), the state's domain
(`by_domain`), then, with `nemo_gym_agents` on, the verifier NVIDIA's pivot datasets are scored
with, by the row's agent name (`NEMO_GYM_AGENTS`), the reference action's kind (`by_action`:
`tool_calls` or `message`), else `default`. So `select` and `train` on a mix of NVIDIA's pivot
datasets score each row as NeMo Gym does. Each entry is a verifier name or `{"name": ..., **options}`, e.g.

    {"default": "tool_call",
     "by_domain": {"terminal": "terminus", "swe": {"name": "tool_call", "word_count_similarity_threshold": 0.0}},
     "by_action": {"message": {"name": "string_similarity", "threshold": 0.6}}}
"""

from __future__ import annotations

from typing import Any

from pivotrl.rewards.base import Score, get_verifier, gym_extra, register_verifier


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


def _build(spec: Any):
    if isinstance(spec, dict):
        spec = dict(spec)
        return get_verifier(spec.pop("name"), **spec)
    return get_verifier(spec)


def agent_name(state) -> str | None:
    """The NeMo Gym agent named by the row a state came from (`agent_ref.name`), if any."""
    ref = gym_extra(state).get("agent_ref")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else None


@register_verifier("dispatch")
class DispatchVerifier:
    def __init__(self, default: Any = "tool_call", by_domain: dict | None = None,
                 by_action: dict | None = None, by_agent: dict | None = None, nemo_gym_agents: bool = True):
        self.default = _build(default)
        self.nemo_gym_agents = nemo_gym_agents
        self._known: dict[str, Any] = {}
        self.by_domain = {k: _build(v) for k, v in (by_domain or {}).items()}
        self.by_action = {k: _build(v) for k, v in (by_action or {}).items()}
        self.by_agent = {k: _build(v) for k, v in (by_agent or {}).items()}

    def choose(self, state):
        agent = agent_name(state)
        if agent in self.by_agent:
            return self.by_agent[agent]
        if isinstance(getattr(state, "domain", None), str) and state.domain in self.by_domain:
            return self.by_domain[state.domain]
        known = nemo_gym_verifier(agent) if self.nemo_gym_agents else None
        if known:
            if known not in self._known:
                self._known[known] = get_verifier(known)
            return self._known[known]
        return self.by_action.get(state.reference.kind, self.default)

    def score(self, completion: Any, state) -> Score:
        return self.choose(state).score(completion, state)
