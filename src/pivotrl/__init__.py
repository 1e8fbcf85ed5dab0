"""pivotrl: PivotRL (arXiv 2603.21383) — RL on the informative turns of existing agent trajectories."""

from pivotrl.data import Action, ToolCall, Trajectory, TrajectorySet, load_trajectories
from pivotrl.errors import DataError
from pivotrl.pivots import (
    State, extract_states, gym_row_to_state, load_states, state_to_gym_row, states_to_dataset, write_states,
)
from pivotrl.rewards import Score, as_reward_function, get_verifier, list_verifiers, parse_action, register_verifier

__version__ = "0.1.0"
__all__ = [
    "Action", "DataError", "Score", "State", "ToolCall", "Trajectory", "TrajectorySet", "as_reward_function",
    "extract_states", "get_verifier", "gym_row_to_state", "list_verifiers", "load_states", "load_trajectories",
    "parse_action", "register_verifier", "state_to_gym_row", "states_to_dataset", "write_states",
]
