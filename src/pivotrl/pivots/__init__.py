"""Pivots: candidate states from trajectories (extract); later, profile and select."""

from pivotrl.pivots.extract import ExtractStats, extract_states  # noqa: F401
from pivotrl.pivots.gym import gym_row_to_state, state_to_gym_row  # noqa: F401
from pivotrl.pivots.load import load_states  # noqa: F401
from pivotrl.pivots.state import State, states_to_dataset, write_states  # noqa: F401
