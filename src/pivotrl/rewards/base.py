"""What every verifier shares: the `Score` it returns, the registry, and the TRL adapter.

A verifier is any object with `score(completion, state) -> Score`. Register a class with
`@register_verifier("name")`; `get_verifier("name", **options)` builds one, and
`get_verifier("my_pkg.module:factory")` loads a user's own (a class, a factory, or a plain
function `(completion, state) -> float | Score`). Another package adds verifiers by name through
the `pivotrl.verifiers` entry-point group (`name = "pkg.module:Class"` in its pyproject), read only
when a name is asked for; the bundled lab registers its own that way.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pivotrl.data.types import Action
from pivotrl.errors import DataError


@dataclass(frozen=True)
class Score:
    """A reward (in [0, 1], or down to -1 where a configuration asks for a penalty, as NeMo Gym's
    `reward_if_swap_fails: -1.0`) and a short reason category (`match`, `wrong_tool`, `bad_json`, ...)."""

    reward: float
    reason: str

    def __float__(self) -> float:
        return float(self.reward)


class Verifier(Protocol):
    name: str

    def score(self, completion: Any, state) -> Score: ...


_REGISTRY: dict[str, Callable[..., Verifier]] = {}


def register_verifier(name: str):
    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


ENTRY_POINTS = "pivotrl.verifiers"


def _entry_points(group: str) -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group)}


def list_verifiers() -> list[str]:
    return sorted(set(_REGISTRY) | set(_entry_points(ENTRY_POINTS)))


def _from_entry_point(name: str):
    ep = _entry_points(ENTRY_POINTS).get(name)
    if ep is None:
        return None
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin is a user-fixable set-up error
        raise DataError(f"cannot load verifier {name!r} from entry point {ep.value!r}: {exc}") from None
    _REGISTRY.setdefault(name, obj)
    return _REGISTRY[name]


def verifier_summary(name: str) -> str:
    """The first sentence describing a registered verifier: its module's doc, or its class's doc
    where one module registers several."""
    cls = _REGISTRY.get(name) or _from_entry_point(name)
    if cls is None:
        raise DataError(f"unknown verifier {name!r}")
    shared = [c.__module__ for c in _REGISTRY.values()].count(cls.__module__) > 1
    own = cls.__dict__.get("__doc__") if isinstance(cls, type) else getattr(cls, "__doc__", None)
    doc = (shared and own) or importlib.import_module(cls.__module__).__doc__ or own or ""
    doc = " ".join(doc.strip().split("\n\n")[0].split())
    doc = doc.split(": ", 1)[-1] if doc.startswith("`") else doc  # module docs open with "`name`: ..."
    return doc.split(". ")[0].rstrip(".")


def get_verifier(spec: str | Verifier, **options) -> Verifier:
    """A verifier by registered name (ours, or a `pivotrl.verifiers` entry point) or
    `module:callable`; an object with `score` passes through."""
    if not isinstance(spec, str):
        return spec
    if spec not in _REGISTRY:
        _from_entry_point(spec)
    if spec in _REGISTRY:
        try:
            return _REGISTRY[spec](**options)
        except TypeError as exc:
            raise DataError(f"bad options for verifier {spec!r}: {exc}") from None
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DataError(f"cannot load verifier {spec!r}: {exc}") from None
        if isinstance(obj, type) or options:
            obj = obj(**options)
        return obj if hasattr(obj, "score") else FunctionVerifier(obj, spec)
    raise DataError(f"unknown verifier {spec!r}; registered: {', '.join(list_verifiers())}, "
                    "or give module:callable")


def build_verifier(spec: Any) -> Verifier:
    """A verifier from config: a name (or `module:callable`), or `{"name": ..., **options}`."""
    if isinstance(spec, dict):
        spec = dict(spec)
        if not isinstance(spec.get("name"), str):
            raise DataError(f"a verifier given as an object needs a 'name': {spec!r}")
        return get_verifier(spec.pop("name"), **spec)
    return get_verifier(spec)


class FunctionVerifier:
    """Wraps a plain `(completion, state) -> float | Score` function as a verifier."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name

    def score(self, completion, state) -> Score:
        try:
            out = self.fn(completion, state)
        except Exception as exc:  # a user's function must not take a whole batch down
            return Score(0.0, f"verifier_error:{type(exc).__name__}")
        return out if isinstance(out, Score) else Score(float(out), "user")


def call_with_timeout(fn: Callable, arg: Any, timeout_s: float | None):
    """`fn(arg)`, or TimeoutError after `timeout_s` seconds (None: wait). A judge behind a network can
    hang for ever (no reply on a live socket), and a profiling or training run must go on. The call
    runs on a daemon thread of its own: a hung one is left behind (Python cannot stop a thread) so
    that it never blocks the next call."""
    if not timeout_s:
        return fn(arg)
    import threading

    box: dict = {}

    def call():
        try:
            box["value"] = fn(arg)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=call, daemon=True, name="judge-call")
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no reply in {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def safe_score(verifier: Verifier, completion: Any, state, truncated: bool = False) -> Score:
    """Score with the never-raise, always-in-[-1, 1] contract enforced around any verifier.

    A `truncated` sample (cut by the token budget, e.g. mid-reasoning) is no action: reward 0, reason
    `truncated`, whatever its text would parse to. Whatever a completion or a state holds, a long run
    goes on: an exception inside a verifier (ours or a user's) scores 0 with the reason
    `verifier_error:<type>`, which reports count. Only a missing sandbox (a set-up error, not a bad
    completion) is raised.
    """
    from pivotrl.sandbox import SandboxUnavailable

    if truncated:
        return Score(0.0, "truncated")
    try:
        s = verifier.score(completion, state)
        reward, reason = float(s.reward), str(s.reason)
    except (RecursionError, MemoryError):
        return Score(0.0, "too_deep")
    except SandboxUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile input must not end the run
        return Score(0.0, f"verifier_error:{type(exc).__name__}")
    if reward != reward:  # NaN
        reward = 0.0
    return Score(min(max(reward, -1.0), 1.0), reason)


def check_states(verifier: Verifier, states, source: str | None = None) -> None:
    """Before a job spends anything: a verifier that can tell up front that it cannot score some
    states (`dispatch` with no rule for a row, `shell` with a workdir outside its root) stops the job
    here, naming the record, rather than scoring them 0 for hours."""
    check = getattr(verifier, "check", None)
    if callable(check):
        check(states, source)


def state_meta(state) -> dict:
    """A state's `meta`, or {} when it has none or something that is not a mapping there."""
    meta = getattr(state, "meta", None)
    return meta if isinstance(meta, dict) else {}


def gym_extra(state) -> dict:
    """The extra columns of the NeMo Gym row a state came from (`agent_ref`, `threshold`, ...)."""
    gym = state_meta(state).get("gym")
    extra = gym.get("extra") if isinstance(gym, dict) else None
    return extra if isinstance(extra, dict) else {}


@dataclass
class ColumnState:
    """The parts of a state a verifier reads, rebuilt from dataset columns inside a trainer."""

    reference: Action
    tools: list
    domain: str = "default"
    meta: dict | None = None
    context: list | None = None


def as_reward_function(verifier: Verifier | str, end_token_ids: Iterable[int] | None = None,
                       **options) -> Callable[..., list[float]]:
    """Adapt a verifier to TRL's reward-function signature `(completions, **columns) -> list[float]`.

    TRL passes every dataset column as a list aligned with `completions`; the reference action and
    tools arrive as the JSON strings that `states_to_dataset` wrote. A text prompt that opened a
    reasoning block gets its completion scored as the whole turn (`parse.as_turn`); with
    `end_token_ids` (end of turn and padding, as TRL's `mask_truncated_completions` uses), a completion
    whose last token is none of them was cut by `max_completion_length` and scores 0 (`truncated`).
    """
    from pivotrl.rewards.parse import as_turn

    v = get_verifier(verifier, **options)
    ends = set(end_token_ids) if end_token_ids is not None else None

    def reward_fn(completions, reference, tools=None, domain=None, prompts=None, meta=None, context=None,
                  completion_ids=None, **_):
        out = []
        for i, completion in enumerate(completions):
            if prompts is not None:
                completion = as_turn(prompts[i], completion)
            ids = completion_ids[i] if completion_ids is not None and ends is not None else None
            truncated = bool(ids) and ids[-1] not in ends
            ref = reference[i]
            ref = Action.from_dict(json.loads(ref) if isinstance(ref, str) else ref)
            t = tools[i] if tools is not None else []
            t = json.loads(t) if isinstance(t, str) else (t or [])
            m = meta[i] if meta is not None else None
            # The state's messages (the `context` column), not the prompt text a trainer rendered.
            c = context[i] if context is not None else (prompts[i] if prompts is not None else None)
            st = ColumnState(ref, t, domain[i] if domain is not None else "default",
                             json.loads(m) if isinstance(m, str) else m,
                             context=json.loads(c) if isinstance(c, str) and context is not None else c)
            out.append(safe_score(v, completion, st, truncated=truncated).reward)
        return out

    reward_fn.__name__ = f"{getattr(v, 'name', 'verifier')}_reward"
    return reward_fn
