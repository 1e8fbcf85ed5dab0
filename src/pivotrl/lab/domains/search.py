"""`search`: multi-hop questions over a generated corpus about fictional people and towns (like
BrowseComp). Retrieval is a real BM25 index (`bm25s`). The agent searches, opens documents, and
answers; success is the exact answer (the region) in the final message.
"""

from __future__ import annotations

import json
import random

from pivotrl.lab.domains.base import Domain, register_domain, run_expert

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
    towns = {_word(rng, 2): rng.choice(REGIONS) for _ in range(4)}
    people = [(f"{_word(rng, 2)} {_word(rng, 2)}", rng.choice(list(towns)), rng.choice(JOBS)) for _ in range(4)]
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


def _expert(task: dict, rng: random.Random) -> dict:
    name, town = task["person"], task["town"]
    pid = next(k for k, v in task["docs"].items() if v.startswith(f"{name} is"))
    tid = next(k for k, v in task["docs"].items() if v.startswith(f"{town} is a town"))
    steps = [("call", ("search", {"query": rng.choice([name, f"{name} born", f"where was {name} born"])})),
             ("call", ("open", {"doc_id": pid})),
             ("call", ("search", {"query": rng.choice([town, f"{town} town", f"{town} region"])})),
             ("call", ("open", {"doc_id": tid})),
             ("say", rng.choice([f"{task['answer']}.", f"The {task['answer']} region.",
                                 f"{name} was born in the {task['answer']} region."]))]
    return run_expert(DOMAIN, task, steps)


DOMAIN = register_domain(Domain("search", SearchEnv, _sample, _expert, verifier="lab_search",
                                description="multi-hop questions over a BM25-indexed corpus (like BrowseComp)"))
