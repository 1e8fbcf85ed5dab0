"""Evaluation: full episodes in environments (the measure that matters, method.md section 4)."""

from pivotrl.eval.episodes import Episode, environment_tools, load_environment, run_episodes  # noqa: F401
