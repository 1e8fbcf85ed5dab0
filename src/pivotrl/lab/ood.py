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
# (reasoning items per generator, pretraining seed) of every base the lab has pretrained
# (results/pretrain/, src/pivotrl/lab/base; a test reads their configs): the corpora an unseen item avoids.
BASE_CORPORA = ((750, 0),)


def pretraining_reasoning(name: str, per_generator: int, pretrain_seed: int):
    """Generator `name`'s reasoning-gym items in a pretraining mixture (`lab.pretrain.build_mixture`)."""
    import reasoning_gym

    return reasoning_gym.create_dataset(name, size=per_generator, seed=7 + pretrain_seed, **GENERATORS[name])


def pretraining_questions(name: str, corpora=BASE_CORPORA) -> set[str]:
    return {e["question"] for per, seed in corpora for e in pretraining_reasoning(name, per, seed)}


def ood_items(n_per_task: int, seed: int = EVAL_SEED, unseen: bool = False) -> list[dict]:
    """`n_per_task` items of each generator. `unseen`: distinct questions that no base's pretraining
    corpus holds, drawn from a larger pool; a generator with fewer such questions than asked for is
    left out (basic_arithmetic at this size: 242 distinct questions, 233 of them in the corpus) and
    named by `ood_left_out`."""
    import reasoning_gym

    items = []
    for name, cfg in GENERATORS.items():
        if not unseen:
            ds = reasoning_gym.create_dataset(name, size=n_per_task, seed=seed, **cfg)
            items += [ood_item(name, i, seed, ds[i]) for i in range(n_per_task)]
            continue
        seen, chosen = pretraining_questions(name), {}
        ds = reasoning_gym.create_dataset(name, size=20 * n_per_task + 1000, seed=seed, **cfg)
        for i, e in enumerate(ds):
            if e["question"] not in seen and e["question"] not in chosen:
                chosen[e["question"]] = ood_item(name, i, seed, e)
                if len(chosen) == n_per_task:
                    items += chosen.values()
                    break
    return items


def ood_left_out(n_per_task: int, seed: int = EVAL_SEED) -> list[str]:
    """The generators `ood_items(..., unseen=True)` leaves out."""
    kept = {it["task"] for it in ood_items(n_per_task, seed, unseen=True)}
    return [name for name in GENERATORS if name not in kept]


def ood_item(name: str, index: int, seed: int, e: dict) -> dict:
    return {"task": name, "index": index, "seed": seed, "question": e["question"], "answer": str(e["answer"])}


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
