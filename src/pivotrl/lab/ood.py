"""The out-of-domain suite, fixed:

- non-agentic tasks from `reasoning-gym` generators, sized for a ~1M-parameter model and scored by
  reasoning-gym's own `score_answer`: basic_arithmetic (two 1-digit terms, + and -),
  letter_counting (3-4 words), spell_backward (3-5 letters), word_sequence_reversal (3-4 words);
- a held-out agentic variant: the store with renamed tools (`lookup_customer`, `get_orders`,
  `void_order`, `ask_customer`) that no training data uses.

The base model sees these reasoning-gym task types in pretraining (other seeds), so forgetting
under SFT and retention under PivotRL are measurable.
"""

from __future__ import annotations

from pivotrl.lab.domains.base import Domain, register_domain, run_expert
from pivotrl.lab.domains.tooluse import StoreEnv, _sample as _store_sample, store_policy, store_tag

GENERATORS = {
    "basic_arithmetic": dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, operators=("+", "-"),
                             allow_parentheses=False, allow_negation=False),
    "letter_counting": dict(min_words=3, max_words=4),
    "spell_backward": dict(min_word_len=3, max_word_len=5),
    "word_sequence_reversal": dict(min_words=3, max_words=4),
}
EVAL_SEED = 20_261_126  # the fixed evaluation draw; pretraining uses other seeds


def ood_items(n_per_task: int, seed: int = EVAL_SEED) -> list[dict]:
    import reasoning_gym

    items = []
    for name, cfg in GENERATORS.items():
        ds = reasoning_gym.create_dataset(name, size=n_per_task, seed=seed, **cfg)
        for i in range(n_per_task):
            e = ds[i]
            items.append({"task": name, "index": i, "seed": seed, "question": e["question"], "answer": str(e["answer"])})
    return items


def score_item(item: dict, text: str) -> float:
    import reasoning_gym

    ds = reasoning_gym.create_dataset(item["task"], size=item["index"] + 1, seed=item["seed"], **GENERATORS[item["task"]])
    return float(ds.score_answer(text.strip(), ds[item["index"]]))


def ood_messages(item: dict) -> list[dict]:
    return [{"role": "user", "content": item["question"]}]


class VariantStoreEnv(StoreEnv):
    """The store with tools under new names: an agentic task no training data shows."""

    ask_user = find_user = list_orders = cancel_order = None  # hidden: only the new names are tools

    def ask_customer(self, question: str) -> str:
        """Ask the customer something.

        Args:
            question: The question.
        """
        return StoreEnv.ask_user(self, question)

    def lookup_customer(self, name: str, zip: str) -> str:
        """Look up a customer id.

        Args:
            name: Customer name.
            zip: Zip code.
        """
        return StoreEnv.find_user(self, name, zip)

    def get_orders(self, user_id: str) -> str:
        """Get a customer's orders.

        Args:
            user_id: The customer id.
        """
        return StoreEnv.list_orders(self, user_id)

    def void_order(self, order_id: str) -> str:
        """Void (cancel) a pending order.

        Args:
            order_id: The order id.
        """
        return StoreEnv.cancel_order(self, order_id)


VARIANT_TOOLS = ("ask_customer", "lookup_customer", "get_orders", "void_order")


def _variant_policy(task: dict, messages: list, rng) -> tuple:
    return store_policy(task, messages, rng, tools=VARIANT_TOOLS)


def _variant_expert(task: dict, rng) -> dict:
    return run_expert(VARIANT, task, _variant_policy, rng=rng)


VARIANT = register_domain(Domain("tooluse_variant", VariantStoreEnv, _store_sample, _variant_expert,
                                 verifier="lab_store", policy=_variant_policy, tag=store_tag,
                                 description="held-out: the store with renamed tools (OOD)"))
