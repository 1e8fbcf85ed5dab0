"""`tooluse`: conversational tool use in a customer-service store (like tau2-bench).

The store is a real SQLite database (users, orders); the agent verifies the user (asking the
scripted user for their zip code), finds their orders and either cancels the one asked for
(pending orders only) or reports its status. Success: the database ends in the expected state
(only that order cancelled, or nothing changed) and the final message names the order and, for a
status question, its status.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3

from pivotrl.lab.domains.base import Domain, pick, register_domain, run_expert, shuffled, task_of, tool_history

FIRST = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jia", "Kofi", "Lena", "Mia", "Noor",
         "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vic", "Wen", "Yara", "Zoe"]
LAST = ["Okafor", "Silva", "Novak", "Haddad", "Kim", "Larsen", "Moreau", "Tanaka", "Ibrahim", "Costa", "Berg",
        "Dubois", "Ortiz", "Patel", "Quinn", "Reyes"]
ITEMS = ["lamp", "bottle", "boots", "mat", "grinder", "jacket", "backpack", "kettle", "tent", "scarf", "clock",
         "radio"]
SYSTEM = "Store agent. Verify the user with find_user (ask for the zip code) before touching orders."


class StoreEnv:
    """The store, in an in-memory SQLite database built from the task at reset."""

    def reset(self, users: list | None = None, orders: list | None = None, name: str = "", zip_code: str = "",
              item: str = "", goal: str = "cancel", **_):
        self.db = sqlite3.connect(":memory:")
        self.db.execute("create table users (id text primary key, name text, zip text)")
        self.db.execute("create table orders (id text primary key, user_id text, item text, status text)")
        self.db.executemany("insert into users values (?, ?, ?)", [tuple(u) for u in users or []])
        self.db.executemany("insert into orders values (?, ?, ?, ?)", [tuple(o) for o in orders or []])
        self.name, self.zip_code, self.item, self.goal = name, zip_code, item, goal
        self.initial = self._orders()
        self.last_message = ""
        return None

    def _orders(self) -> dict:
        return {r[0]: r[3] for r in self.db.execute("select * from orders order by id")}

    def ask_user(self, question: str) -> str:
        """Ask the customer a question.

        Args:
            question: What to ask.
        """
        if "zip" in question.lower():
            return self.zip_code
        return f"I am {self.name}. It is about my {self.item} order."

    def find_user(self, name: str, zip: str) -> str:
        """Find a user id.

        Args:
            name: Full name.
            zip: Zip code.
        """
        row = self.db.execute("select id from users where name = ? and zip = ?", (name, zip)).fetchone()
        if row is None:
            raise ValueError("no such user")
        return row[0]

    def list_orders(self, user_id: str) -> str:
        """List a user's orders.

        Args:
            user_id: The user id.
        """
        rows = self.db.execute("select id, item, status from orders where user_id = ? order by id", (user_id,))
        return json.dumps([{"order_id": r[0], "item": r[1], "status": r[2]} for r in rows])

    def cancel_order(self, order_id: str) -> str:
        """Cancel a pending order.

        Args:
            order_id: The order id.
        """
        row = self.db.execute("select status from orders where id = ?", (order_id,)).fetchone()
        if row is None:
            raise ValueError("no such order")
        if row[0] != "pending":
            raise ValueError(f"order is {row[0]}, not pending")
        self.db.execute("update orders set status = 'cancelled' where id = ?", (order_id,))
        return "cancelled"

    def _target(self) -> tuple[str, str]:
        uid = self.db.execute("select id from users where name = ? and zip = ?", (self.name, self.zip_code)).fetchone()[0]
        oid = self.db.execute("select id from orders where user_id = ? and item = ?", (uid, self.item)).fetchone()[0]
        return oid, self.initial[oid]

    def _state(self):
        """What an action can change: the orders' statuses (compared by the lab's verifier)."""
        return self._orders()

    def get_reward(self) -> float:
        oid, status = self._target()
        expected = dict(self.initial)
        if self.goal == "cancel":
            expected[oid] = "cancelled"
        text = getattr(self, "final_message", "") or ""
        said = oid in text and (self.goal == "cancel" or status in text)
        return 1.0 if self._orders() == expected and said else 0.0


def _sample(rng: random.Random) -> dict:
    people = rng.sample([(f, l) for f in FIRST for l in LAST], 3)
    uids = rng.sample(range(100, 1000), 3)
    oids = iter(rng.sample(range(1000, 10000), 9))  # distinct ids: they are primary keys
    users, orders = [], []
    for (f, l), u in zip(people, uids):
        uid = f"U{u}"
        users.append([uid, f"{f} {l}", f"{rng.randint(10000, 99999)}"])
        for item in rng.sample(ITEMS, rng.randint(2, 3)):
            orders.append([f"O{next(oids)}", uid, item, rng.choice(["pending", "delivered"])])
    me = users[0]
    mine = [o for o in orders if o[1] == me[0]]
    target = rng.choice(mine)
    goal = rng.choice(["cancel", "status"])
    if goal == "cancel":
        target[3] = "pending"
    ask = {"cancel": [f"Hi, I am {me[1]}. Please cancel my {target[2]} order.",
                      f"I want to cancel the {target[2]} I ordered. My name is {me[1]}."],
           "status": [f"Hi, I am {me[1]}. What is the status of my {target[2]} order?",
                      f"Where is my {target[2]}? My name is {me[1]}."]}[goal]
    return {"key": json.dumps([users, orders, goal, target[0]]),
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": rng.choice(ask)}],
            "users": users, "orders": orders, "name": me[1], "zip_code": me[2], "item": target[2], "goal": goal}


def store_policy(task: dict, messages: list, rng: random.Random | None, tools=("ask_user", "find_user",
                 "list_orders", "cancel_order")) -> tuple:
    """The store's expert: ask the zip code, find the user, list the orders, cancel the one asked for
    or report its status; every step from what the store answered so far."""
    ask, find, listing, cancel = tools
    seen = tool_history(messages)
    zips = [out.strip() for name, _, out in seen if name == ask and re.fullmatch(r"\d{5}", out.strip())]
    if not zips:
        return "call", (ask, {"question": pick(rng, ["What is your zip code?", "Could you tell me your zip code?",
                                                      "Please give me your zip code."])})
    uids = [out for name, _, out in seen if name == find and re.fullmatch(r"U\d+", out)]
    if not uids:
        return "call", (find, shuffled({"name": task["name"], "zip": zips[-1]}, rng))
    orders = [out for name, args, out in seen if name == listing and args.get("user_id") == uids[-1]
              and out.startswith("[")]
    if not orders:
        return "call", (listing, {"user_id": uids[-1]})
    order = next((o for o in json.loads(orders[-1]) if o.get("item") == task["item"]), None)
    if order is None:
        return "say", "I could not find that order."
    oid = order["order_id"]
    if task["goal"] == "cancel":
        if not any(name == cancel and args.get("order_id") == oid and out == "cancelled" for name, args, out in seen):
            return "call", (cancel, {"order_id": oid})
        return "say", pick(rng, [f"Your order {oid} is cancelled.", f"Done: order {oid} has been cancelled.",
                                 f"I cancelled order {oid} for you."])
    return "say", pick(rng, [f"Your order {oid} is {order['status']}.", f"Order {oid} ({task['item']}) is {order['status']}.",
                             f"The status of order {oid} is {order['status']}."])


def _expert(task: dict, rng: random.Random) -> dict:
    return run_expert(DOMAIN, task, store_policy, rng=rng)


def store_tag(state) -> str:
    """Decision: cancel one order among the listed ones, or report its status; the rest copies a
    value shown once (the name, the zip code, the user id, the order just cancelled)."""
    ref = state.reference
    if ref.kind == "message":
        return "decision" if task_of(state).get("goal") == "status" else "copy"
    return "decision" if ref.calls and ref.calls[0].name in ("cancel_order", "void_order") else "copy"


DOMAIN = register_domain(Domain("tooluse", StoreEnv, _sample, _expert, verifier="lab_store",
                                policy=store_policy, tag=store_tag,
                                description="customer-service store in SQLite (like tau2-bench)"))
