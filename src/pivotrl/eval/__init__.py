"""Evaluation: full episodes in environments (the measure that matters: a public
re-run of NVIDIA's recipe found single-step accuracy did not predict episode success)."""

from pivotrl.eval.episodes import Episode, environment_tools, load_environment, run_episodes  # noqa: F401
