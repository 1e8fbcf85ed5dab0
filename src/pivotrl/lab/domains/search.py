"""`search`: multi-hop questions over a generated corpus about fictional people and towns (like
BrowseComp). Retrieval is a real BM25 index (`bm25s`). The agent searches, opens documents, and
answers; success is the exact answer (the region) in the final message.
"""

from __future__ import annotations

import json
import random
import re

from pivotrl.lab.domains.base import Domain, pick, register_domain, run_expert, tool_history

SYL = ["ka", "lo", "mer", "dan", "vi", "tor", "sel", "ra", "bu", "nen", "os", "li", "gar", "ven", "tu", "mi"]
REGIONS = ["North", "South", "East", "West", "Coast", "Hills", "Lakes", "Plains"]
JOBS = ["baker", "painter", "pilot", "farmer", "poet", "doctor"]
SYSTEM = "Research agent. Use search and open to find facts, then answer briefly."


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(SYL) for _ in range(n)).capitalize()


class SearchEnv:
    def reset(self, docs: dict | None = None, answer: str = "", **_):
        import bm25s

        self.docs = docs or {}
        self.ids = list(self.docs)
        self.answer = answer
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([self.docs[i] for i in self.ids], show_progress=False), show_progress=False)
        return None

    def search(self, query: str) -> str:
        """Search the documents.

        Args:
            query: Search words.
        """
        import bm25s

        tokens = bm25s.tokenize([query], show_progress=False)
        if not any(len(t) for t in tokens.ids):
            return "no results"
        results, scores = self.retriever.retrieve(tokens, k=min(3, len(self.ids)), show_progress=False)
        hits = [self.ids[i] for i, s in zip(results[0], scores[0]) if s > 0]
        return "\n".join(f"{i}: {self.docs[i].split('.')[0]}" for i in hits) or "no results"

    def open(self, doc_id: str) -> str:
        """Read a document.

        Args:
            doc_id: The document id.
        """
        if doc_id not in self.docs:
            raise ValueError(f"no document {doc_id}")
        return self.docs[doc_id]

    def get_reward(self) -> float:
        text = (getattr(self, "final_message", "") or "").replace(".", " ").split()
        return 1.0 if self.answer in text else 0.0


def _sample(rng: random.Random) -> dict:
    while True:
        towns = {_word(rng, 2): rng.choice(REGIONS) for _ in range(4)}
        people = [(f"{_word(rng, 2)} {_word(rng, 2)}", rng.choice(list(towns)), rng.choice(JOBS)) for _ in range(4)]
        # two people of one name (about 1 task in 10,000) make the question ambiguous: drawn again
        if len({name for name, _, _ in people}) == len(people):
            break
    docs = {}
    for i, (name, town, job) in enumerate(people):
        docs[f"p{i}"] = f"{name} is a {job}. {name} was born in {town}."
    for i, (town, region) in enumerate(towns.items()):
        docs[f"t{i}"] = f"{town} is a town. {town} lies in the {region} region."
    order = list(docs)
    rng.shuffle(order)
    docs = {k: docs[k] for k in order}
    name, town, _ = rng.choice(people)
    q = rng.choice([f"In which region was {name} born?", f"{name} was born in a town. Which region is it in?"])
    return {"key": json.dumps([docs, name]), "docs": docs, "answer": towns[town], "person": name, "town": town,
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}


def search_policy(task: dict, messages: list, rng: random.Random | None) -> tuple:
    """The research expert, from what search and open returned: find the person's document, read
    the town, find the town's document, read the region, answer."""
    name = task["person"]
    seen = tool_history(messages)
    listed = {}  # document id -> first sentence, from search results
    for tool, _, out in seen:
        if tool == "search":
            listed.update(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    opened = [out for tool, _, out in seen if tool == "open"]
    towns = [m.group(1) for out in opened if (m := re.search(rf"{re.escape(name)} was born in (\w+)\.", out))]
    if not towns:
        pid = next((i for i, first in listed.items() if first.startswith(f"{name} is")), None)
        if pid is None:
            return "call", ("search", {"query": pick(rng, [name, f"{name} born", f"where was {name} born"])})
        return "call", ("open", {"doc_id": pid})
    town = towns[-1]
    regions = [m.group(1) for out in opened if (m := re.search(rf"{re.escape(town)} lies in the (\w+) region", out))]
    if regions:
        return "say", pick(rng, [f"{regions[-1]}.", f"The {regions[-1]} region.", f"{name} was born in the {regions[-1]} region."])
    tid = next((i for i, first in listed.items() if first == f"{town} is a town"), None)
    if tid is None:
        return "call", ("search", {"query": pick(rng, [town, f"{town} town", f"{town} region"])})
    return "call", ("open", {"doc_id": tid})


def _expert(task: dict, rng: random.Random) -> dict:
    return run_expert(DOMAIN, task, search_policy, rng=rng)


def search_tag(state) -> str:
    """Decision: open one document among the results; the rest copies (a name or town into a
    query, the region into the answer)."""
    ref = state.reference
    return "decision" if ref.kind == "tool_calls" and ref.calls and ref.calls[0].name == "open" else "copy"


DOMAIN = register_domain(Domain("search", SearchEnv, _sample, _expert, verifier="lab_search",
                                policy=search_policy, tag=search_tag,
                                description="multi-hop questions over a BM25-indexed corpus (like BrowseComp)"))
