"""Offline profiling: K actions per state from the frozen reference policy, each scored by the
functional verifier. One record per state: the K rewards, their mean and variance, reasons,
token counts, and (optionally) the sampled texts.

Resumable: finished batches are appended, as whole lines, to a journal beside the output
(`OUT.partial.jsonl`); a rerun cuts off a line torn by a crash mid-append (`append_jsonl`), skips every state
already in the journal or the output and never writes a state twice; at the end the output is written atomically and the journal removed.
States go in batches fixed by their order in the input, each sampled with a seed derived from
the run seed and the batch's first state id, so an interrupted and resumed run (or a Ray run)
gives the same records as one uninterrupted local run.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path

from pivotrl.artifacts import append_jsonl, atomic_open, write_jsonl
from pivotrl.errors import DataError
from pivotrl.pivots.profile_records import read_profile, summarise  # noqa: F401 - summarise: imported from here too
from pivotrl.pivots.state import State
from pivotrl.rewards import check_states, get_verifier, safe_score
from pivotrl.rewards.exact import canonical_text
from pivotrl.rewards.parse import parse_action
from pivotrl.sampling.base import GENERATION_BUDGET, Prompt, Sampler, SamplingParams
from pivotrl.sampling.ray_pool import PoolError


BATCH_SIZES = {"transformers": 8, "vllm": 256, "openai": 64}


@dataclass
class ProfileConfig:
    """Everything `pivotrl profile` takes: YAML keys and `--key value` flags fill this one dataclass
    (through TRL's parser, as for the trainers). Option dicts take JSON on the command line."""

    model: str = field(default="", metadata={"help": "Frozen reference policy: a local directory or a hub id."})
    k: int = field(default=8, metadata={"help": "Samples per state."})
    verifier: str = field(default="tool_call", metadata={"help": "Verifier name or module:callable.",
                                                         "aliases": ["-v"]})
    verifier_options: dict | str | None = field(default_factory=dict, metadata={"help": "Verifier options (JSON)."})
    backend: str = field(default="transformers", metadata={"help": "transformers, vllm or openai."})
    backend_options: dict | str | None = field(default_factory=dict, metadata={
        "help": "Backend options (JSON), e.g. base_url, batch_size, token_budget."})
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = field(default=0, metadata={"help": "0: off (TRL's GRPOConfig default). Sent to every backend "
                                                   "explicitly: a server's own default (Qwen3's 20) is never used."})
    min_p: float = field(default=0.0, metadata={"help": "0: off."})
    repetition_penalty: float = 1.0
    max_tokens: int = field(default=GENERATION_BUDGET, metadata={
        "help": "Token budget of a sampled action (its reasoning included); training and evaluation of the pivots "
                "default to the same."})
    batch_size: int | None = field(default=None, metadata={
        "help": "States per sampling batch (the unit of resuming; one sampler call): default 8 for transformers, "
                "256 for vllm (whose scheduler wants every sequence it can get), 64 for openai."})
    score_truncated: bool = field(default=False, metadata={
        "help": "Score samples cut by max_tokens as they are (default: 0, reason 'truncated'), as train's option."})
    keep_samples: bool = field(default=False, metadata={"help": "Store the sampled texts."})
    format: str = field(default="records", metadata={"help": "records (our profile) or gym (NeMo Gym rows)."})
    seed: int = 0
    chat_template: str | None = field(default=None, metadata={"help": "A Jinja chat template file."})
    chat_template_kwargs: dict | str | None = field(default_factory=dict, metadata={
        "help": "Chat template options (JSON), e.g. {\"enable_thinking\": false} for Qwen3."})
    ray: bool = field(default=False, metadata={"help": "Fan out over Ray actors."})
    num_workers: int = 2
    gpus_per_worker: float | None = field(default=None, metadata={
        "help": "Default: whole GPUs as the backend needs (sampling/ray_pool.py)."})
    ray_address: str | None = field(default=None, metadata={"help": "An existing cluster (default: start one)."})
    max_restarts: int = field(default=3, metadata={
        "help": "Ray: how many times each worker is replaced after it dies (or is stuck) before it is retired."})
    max_batch_retries: int = field(default=2, metadata={
        "help": "Ray: how many times one batch is resubmitted after its worker died or its sampling raised."})
    worker_timeout_s: float | None = field(default=None, metadata={
        "help": "Ray: a worker with no result for this long is killed and replaced, its batch resubmitted "
                "(default: wait; set it above your slowest batch plus a worker's start-up, which a new worker's first "
                "batch includes)."})

    def __post_init__(self):
        if self.batch_size is None:
            self.batch_size = BATCH_SIZES.get(self.backend, 8)
        for name in ("verifier_options", "backend_options", "chat_template_kwargs"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value) if value.strip() else {}
                except ValueError:
                    raise DataError(f"{name} must be a JSON object, got {value!r}") from None
            if not isinstance(value or {}, dict):
                raise DataError(f"{name} must be a mapping")
            setattr(self, name, dict(value or {}))


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial.jsonl")


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def read_records(path: Path, journal: bool = False) -> list[dict]:
    """Profile records from a .parquet or .jsonl file, each checked (`profile_records.check_record`);
    none when there is no file. In a `journal`, a torn last line is left out."""
    return read_profile(path, journal=journal) if Path(path).exists() else []


def write_records(path: Path, records: list[dict]) -> None:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records)
        with atomic_open(path, "wb") as fh:
            pq.write_table(table, fh)
    else:
        write_jsonl(path, records)


def batch_seed(seed: int, first_state_id: str) -> int:
    return int(hashlib.sha1(f"{seed}:{first_state_id}".encode()).hexdigest()[:8], 16)


def records_path(output: Path, fmt: str) -> Path:
    """Where the records live: the output itself, or beside NeMo Gym rows (which are derived)."""
    if fmt not in ("records", "gym"):
        raise DataError(f"format must be records or gym, not {fmt!r}")
    return output if fmt == "records" else output.with_name(output.name + ".records.jsonl")


class TruncationWarning(UserWarning):
    """Many samples were cut by the token budget: the profile measures the budget, not the states."""


TRUNCATION_WARN_SHARE = 0.05  # above this share of cut samples, profiling says so


def truncation_message(records: list[dict], max_tokens: int) -> str | None:
    """A warning when more than 5% of the samples were cut by `max_tokens`: each scores 0 as no
    action, so with a thinking model the pivots would measure how briefly it thinks, not how hard
    the state is."""
    samples = sum(len(r["rewards"]) for r in records if not r["skipped"])
    cut = sum(r["n_truncated"] for r in records if not r["skipped"])
    if not samples or cut / samples <= TRUNCATION_WARN_SHARE:
        return None
    states = sum(r["n_truncated"] > 0 for r in records if not r["skipped"])
    return (f"{cut} of {samples} samples ({cut / samples:.1%}, in {states} states) were cut by max_tokens="
            f"{max_tokens} and scored 0 as no action: raise max_tokens (a thinking model needs room to finish "
            "its reasoning) and use the same budget for training and evaluation")


def profile_states(states: list[State], sampler: Sampler, verifier, *, k: int, params: SamplingParams,
                   output: str | Path, batch_size: int = 8, keep_samples: bool = False, seed: int = 0,
                   model_name: str = "", verifier_name: str = "", fmt: str = "records", progress=None,
                   template: dict | None = None, score_truncated: bool = False) -> list[dict]:
    """Profile every state not yet in `output` (or its journal); return all records, input order.
    `template` (`chat_template`, `chat_template_kwargs`: what the sampler renders prompts with) is
    written beside the bill with the token budget, so that training and evaluation of these pivots
    generate alike by default."""
    final = Path(output)
    output = records_path(final, fmt)
    journal = journal_path(output)
    verifier = get_verifier(verifier) if isinstance(verifier, str) else verifier
    check_states(verifier, states)
    params = replace(params, n=k)
    done = {r["state_id"]: r for r in read_records(output) + read_records(journal, journal=True)}
    ids = [s.id for s in states]
    if len(set(ids)) != len(ids):
        raise DataError("state ids are not unique: profiling joins on them")
    batches = [states[i:i + batch_size] for i in range(0, len(states), batch_size)]
    todo = [([s for s in b if s.id not in done], batch_seed(seed, b[0].id)) for b in batches]
    todo = [(b, sd) for b, sd in todo if b]
    start = time.time()
    if progress:
        progress(len(done), len(states), 0, 0.0)
    work = ((([Prompt(s.context, s.tools) for s in b]), params, sd) for b, sd in todo)
    n_samples, tick = 0, time.time()
    try:
        for (batch, _), results in zip(todo, sampler.sample_batches(work)):
            now = time.time()
            share = (now - tick) / len(batch)  # each record carries its share of the batch's wall-clock
            tick = now
            records = [_record(s, res, verifier, keep_samples, model_name, verifier_name, k, share, score_truncated)
                       for s, res in zip(batch, results)]
            append_jsonl(journal, records)
            for r in records:
                done[r["state_id"]] = r
                n_samples += len(r["rewards"])
            if progress:
                progress(len(done), len(states), n_samples, time.time() - start)
    except PoolError as exc:
        raise DataError(f"{exc.reason} (that batch starts at state {todo[exc.batch][0][0].id}); the {len(done)} "
                        f"states done are kept in {journal}: run the same command again to resume") from None
    records = [done[s.id] for s in states if s.id in done]
    extra = [r for sid, r in done.items() if sid not in set(ids)]  # from an earlier run on more states
    write_records(output, records + extra)
    journal.unlink(missing_ok=True)
    if fmt == "gym":
        write_jsonl(final, profile_to_gym_rows(records + extra))
    generation = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                  "top_k": params.top_k, "min_p": params.min_p, "repetition_penalty": params.repetition_penalty,
                  "chat_template": None, "chat_template_kwargs": {}, **(template or {})}
    stats = getattr(sampler, "stats", None)  # the Ray pool's: batches retried, workers restarted
    _write_cost(final, records + extra, generation, asdict(stats) if is_dataclass(stats) else None)
    message = truncation_message(records, params.max_tokens)
    if message:
        warnings.warn(message, TruncationWarning, stacklevel=2)
    return records


def _record(state: State, res, verifier, keep_samples: bool, model: str, verifier_name: str, k: int,
            seconds: float, score_truncated: bool = False) -> dict:
    scores = [safe_score(verifier, s.completion, state, truncated=s.truncated and not score_truncated)
              for s in res.samples]
    rewards = [sc.reward for sc in scores]
    actions = {canonical_text(parse_action(s.completion, state.tools)) for s in res.samples}
    rec = {"state_id": state.id, "trajectory_id": state.trajectory_id, "domain": state.domain,
           "turn_index": state.turn_index, "num_turns": state.num_turns, "k": k, "rewards": rewards,
           **summarise(rewards), "reasons": [sc.reason for sc in scores],
           "n_truncated": sum(s.truncated for s in res.samples), "prompt_tokens": res.prompt_tokens,
           "completion_tokens": [s.tokens for s in res.samples], "num_unique_actions": len(actions),
           "skipped": res.skipped, "model": model, "verifier": verifier_name, "seconds": seconds,
           "state": json.dumps(state.to_dict(), ensure_ascii=False)}
    if keep_samples:
        rec["samples"] = [s.completion if isinstance(s.completion, str) else json.dumps(s.completion)
                          for s in res.samples]
    return rec


def _write_cost(output: Path, records: list[dict], generation: dict, pool: dict | None = None) -> None:
    """The profiling bill, from the records themselves, so runs that were interrupted and resumed
    are counted exactly once (the training ledger charges it to PivotRL as its own line), and how the
    samples were generated (`pivotrl.train.pivotrl_trainer.generation_settings` reads it)."""
    cost = {"states": len(records), "skipped": sum(bool(r["skipped"]) for r in records),
            "samples": sum(len(r["rewards"]) for r in records),
            "generated_tokens": sum(sum(r["completion_tokens"]) for r in records),
            "verifier_calls": sum(len(r["rewards"]) for r in records),
            "truncated_samples": sum(r["n_truncated"] for r in records),
            "wall_clock_s": sum(r.get("seconds", 0.0) for r in records),
            "models": sorted({r["model"] for r in records}), "verifiers": sorted({r["verifier"] for r in records}),
            "generation": generation}
    if pool:  # this invocation's pool (a resumed run's earlier invocations are not counted here)
        cost["pool"] = pool
    with atomic_open(meta_path(output)) as fh:
        fh.write(json.dumps(cost, indent=2))


def profile_to_gym_rows(records: Iterable[dict], agent: str | None = None) -> list[dict]:
    """NeMo Gym rows carrying the same profiling columns as NVIDIA's released pivot datasets (for the
    states that were sampled)."""
    from pivotrl.pivots.gym import DEFAULT_AGENT, state_to_gym_row

    rows = []
    for r in records:
        if r["skipped"] or not r["rewards"]:
            continue
        state = State.from_dict(json.loads(r["state"]))
        passed = sum(x == 1.0 for x in r["rewards"])
        state.meta["profile"] = {"rewards": r["rewards"], "reward_mean": r["reward_mean"],
                                 "reward_std": r["reward_std"], "reward_var": r["reward_var"],
                                 "pass_rate": passed / len(r["rewards"]), "pass_rate_total": len(r["rewards"]),
                                 "pass_rate_passed": passed, "num_unique_actions": r.get("num_unique_actions")}
        rows.append(state_to_gym_row(state, agent or DEFAULT_AGENT))
    return rows
