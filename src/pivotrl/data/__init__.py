"""Trajectories in: formats, loaders, the bundled sample generator."""

from pivotrl.data.loaders import TrajectorySet, load_trajectories  # noqa: F401
from pivotrl.data.types import Action, ToolCall, Trajectory  # noqa: F401
