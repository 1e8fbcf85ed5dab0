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
import sqlite3

from pivotrl.lab.domains.base import Domain, register_domain, run_expert, shuffled

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


def _expert(task: dict, rng: random.Random) -> dict:
    uid = next(u[0] for u in task["users"] if u[1] == task["name"])
    order = next(o for o in task["orders"] if o[1] == uid and o[2] == task["item"])
    ask = rng.choice(["What is your zip code?", "Could you tell me your zip code?", "Please give me your zip code."])
    steps = [("call", ("ask_user", {"question": ask})),
             ("call", ("find_user", shuffled({"name": task["name"], "zip": task["zip_code"]}, rng))),
             ("call", ("list_orders", {"user_id": uid}))]
    if task["goal"] == "cancel":
        steps.append(("call", ("cancel_order", {"order_id": order[0]})))
        say = rng.choice([f"Your order {order[0]} is cancelled.", f"Done: order {order[0]} has been cancelled.",
                          f"I cancelled order {order[0]} for you."])
    else:
        say = rng.choice([f"Your order {order[0]} is {order[3]}.", f"Order {order[0]} ({task['item']}) is {order[3]}.",
                          f"The status of order {order[0]} is {order[3]}."])
    steps.append(("say", say))
    return run_expert(DOMAIN, task, steps)


DOMAIN = register_domain(Domain("tooluse", StoreEnv, _sample, _expert, verifier="tool_call",
                                verifier_options={"word_count_similarity_threshold": 0.1},
                                description="customer-service store in SQLite (like tau2-bench)"))
