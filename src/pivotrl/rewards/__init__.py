"""Functional verifiers. Importing this package registers the built-in ones; adding a verifier is
one module with a class decorated by `@register_verifier("name")`, imported here, or, from another
package, one `pivotrl.verifiers` entry point."""

from pivotrl.rewards.base import (  # noqa: F401
    ColumnState, FunctionVerifier, Score, Verifier, as_reward_function, check_states, get_verifier,
    list_verifiers, register_verifier, safe_score,
)
from pivotrl.rewards.parse import parse_action  # noqa: F401
from pivotrl.rewards import (  # noqa: F401  (registration side effect)
    dispatch, exact, judge, shell, string_similarity, swe_pivot, terminus, tool_call, tool_call_schema,
)
