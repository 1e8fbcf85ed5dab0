"""Sibling task families: the generalist base's agentic pretraining, with no in-domain trajectory.

PivotRL (arXiv 2603.21383) post-trains a base that is already a competent agent in general and
meets each benchmark's own tools and entities for the first time in its SFT data. The lab's base
learns that competence here: the same decision primitives as the lab's domains, on other tools,
entities and templates, so that a lab domain is new to it but not foreign:

- `desk` (sibling of tooluse's store): a hotel, library, clinic or airline desk: ask the customer
  for an identifying value, look them up by name and that value, list their records, change the one
  asked for (only in the state that allows it) or report its status;
- `files` (sibling of terminal): config, log and inventory folders in other formats, behind shell
  tools of other names: list a folder, read or grep a file, answer with one value among its lines;
  count files; write a file and read it back;
- `lookup` (sibling of search): a catalogue of songs, bands, dishes, chefs... with two-hop questions
  behind other search and read tools;
- `bugs` (sibling of code and repo): text, list and predicate functions (other bug families than
  code's arithmetic), one file or several, fixed through tools of other names, with the tests run
  first (map the failing test to its function) or the file read first;
- `primitives`: single-turn drills of the decisions themselves (pick one of N records by an
  attribute, copy the id from the matching line, name the function a failing test points at);
- `keyed` (a later family, in a mixture only when asked for): `files`' value lookup after `cat` and
  its file writing with every folder, file, key and word made up in each document, so that the
  lookup and the copying can be learnt and no entity can (weighting `files` up taught its folders
  and file names as much as its lookup);
- `records` (later, only when asked for): one `cat` of `key=value` lines and 3-6 questions about it,
  each answered from the same lines: the lookup at a density `keyed` lacks; `listed_records` the same
  after an `ls` of the folder, the question naming the file by its stem.

The generators simulate each tool's answer in the format the real tool would print (a JSON list,
`ls` lines, `N:line` from `grep -n`, pytest's `FAILED test_x; 1 failed, 2 passed`); every document is
an OpenAI-format `(messages, tools)` pair rendered with the chat template like a lab trajectory.
Tool and parameter names change from document to document (a role's usual words, or made-up ones):
a first run with a few fixed names per family learned the names by heart and called them in the
lab's domains (`ask_member` in the store), where the tool list in the context names others. Names, ids and values come from vocabularies disjoint from the lab domains' and the held-out
variant's (`lookup_customer`, `void_order`, ...): `tests/test_lab_siblings.py` checks it.
"""

from __future__ import annotations

import json
import random
import re

from pivotrl.lab.domains.base import shuffled
from pivotrl.lab.domains.code import module_source

SYLLABLES = ["pa", "ri", "zo", "ke", "mu", "sa", "tov", "qui", "bor", "fen", "ya", "do", "wen", "ix", "lu", "cha"]
FIRST = ["Abel", "Bea", "Cyrus", "Dina", "Emre", "Flo", "Gil", "Hedy", "Ines", "Joel", "Kai", "Lucia", "Milo",
         "Nadia", "Otto", "Priya", "Rosa", "Sven", "Tess", "Uri", "Vera", "Wade", "Xena", "Yusuf"]
LAST = ["Adler", "Brandt", "Cruz", "Diallo", "Engel", "Fischer", "Garcia", "Holm", "Ito", "Jansen", "Keller",
        "Lund", "Mendes", "Nakamura", "Olsen", "Petrov"]


def tool(tool_name: str, description: str, **params: str) -> dict:
    """An OpenAI function schema, as the lab's environments give theirs (string parameters)."""
    return {"type": "function", "function": {"name": tool_name, "description": description, "parameters": {
        "type": "object", "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
        "required": list(params)}}}


def tool_word(rng: random.Random, words: list[str]) -> str:
    """A tool or parameter name for a role: one of its usual words, or (three times in ten) a made-up
    one, so that the only sure way to name a tool is to copy it from the tool list in the context."""
    return rng.choice(words) if rng.random() >= 0.3 else f"{word(rng).lower()}_{rng.choice(words).split('_')[-1]}"


def call(n: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def answer(n: int, content: str) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{n}", "content": content}


def word(rng: random.Random, n: int = 2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n)).capitalize()


# --- desk: the store's primitives at other desks -------------------------------------------------
DESKS = [
    dict(desk="Hotel front desk", who=["guest", "visitor", "client"], prefix="G", key=["phone", "phone_number"],
         ask="phone number", record=["reservation", "booking", "stay"], rprefix="R", field="room",
         things=["suite", "twin room", "loft", "cabin", "studio", "attic"], open="booked", closed="completed",
         verb=["cancel", "release"]),
    dict(desk="Library desk", who=["member", "reader", "patron"], prefix="M", key=["card", "card_number"],
         ask="library card number", record=["loan", "checkout", "borrowing"], rprefix="L", field="book",
         things=["atlas", "novel", "cookbook", "biography", "comic", "dictionary"], open="on loan", closed="returned",
         verb=["renew", "extend"]),
    dict(desk="Clinic reception", who=["patient", "client", "visitor"], prefix="P", key=["birth_year", "year"],
         ask="birth year", record=["appointment", "visit", "slot"], rprefix="A", field="service",
         things=["checkup", "x-ray", "vaccine", "dentist", "therapy", "eye exam"], open="scheduled", closed="attended",
         verb=["cancel", "withdraw"]),
    dict(desk="Airline service", who=["passenger", "traveler", "flyer"], prefix="T", key=["email", "email_address"],
         ask="email address", record=["booking", "ticket", "flight"], rprefix="B", field="destination",
         things=["Porto", "Quito", "Hanoi", "Tunis", "Perth", "Accra"], open="confirmed", closed="flown",
         verb=["refund", "reimburse"]),
]
ASK_VERBS = ["ask", "question", "message", "contact"]
FIND_VERBS = ["find", "lookup", "locate", "identify", "resolve"]
LIST_VERBS = ["list", "get", "show", "fetch", "browse"]
DONE = {"cancel": "cancelled", "release": "released", "renew": "renewed", "extend": "extended", "withdraw": "withdrawn",
        "refund": "refunded", "reimburse": "reimbursed"}


def _key_value(kind: str, rng: random.Random, first: str) -> str:
    if kind == "phone":
        return f"{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    if kind == "card":
        return str(rng.randint(100000, 999999))
    if kind == "birth_year":
        return str(rng.randint(1940, 2005))
    return f"{first.lower()}{rng.randint(1, 99)}@mail.test"


def desk_doc(rng: random.Random) -> tuple[list, list]:
    d = rng.choice(DESKS)
    who, rec, verb = rng.choice(d["who"]), rng.choice(d["record"]), rng.choice(d["verb"])
    key = rng.choice(d["key"])
    ask, find = f"{tool_word(rng, ASK_VERBS)}_{who}", f"{tool_word(rng, FIND_VERBS)}_{who}"
    listing, act = f"{tool_word(rng, LIST_VERBS)}_{rec}s", f"{verb}_{rec}"
    fld = d["field"]
    d = {**d, "key": key, "verb": verb, "done": DONE[verb]}
    people = rng.sample([(f, l) for f in FIRST for l in LAST], 3)
    records, ids = [], iter(rng.sample(range(1000, 10000), 9))
    users = []
    for (f, l), n in zip(people, rng.sample(range(100, 1000), 3)):  # distinct ids: each names one customer
        uid = f"{d['prefix']}{n}"
        users.append((uid, f"{f} {l}", _key_value(d["key"].split("_")[0], rng, f)))
        for thing in rng.sample(d["things"], rng.randint(2, 3)):
            records.append([f"{d['rprefix']}{next(ids)}", uid, thing, rng.choice([d["open"], d["closed"]])])
    uid, name, value = users[0]
    mine = [r for r in records if r[1] == uid]
    target = rng.choice(mine)
    goal = rng.choice(["act", "status"])
    if goal == "act":
        target[3] = d["open"]
    request = {"act": [f"Hello, this is {name}. Please {d['verb']} my {target[2]} {rec}.",
                       f"I need to {d['verb']} the {rec} for the {target[2]}. I am {name}."],
               "status": [f"Hello, this is {name}. What is the status of my {target[2]} {rec}?",
                          f"Is my {target[2]} {rec} still {d['open']}? My name is {name}."]}[goal]
    tools = [tool(ask, f"Ask the {who} a question.", question="What to ask."),
             tool(find, f"Find a {who} id.", name="Full name.", **{d["key"]: f"The {d['ask']}."}),
             tool(listing, f"List a {who}'s {rec}s.", **{f"{who}_id": f"The {who} id."}),
             tool(act, f"{d['verb'].capitalize()} a {rec} that is {d['open']}.", **{f"{rec}_id": f"The {rec} id."})]
    rng.shuffle(tools)
    msgs = [{"role": "system", "content": f"{d['desk']} agent. Verify the {who} with {find} (ask for the "
                                          f"{d['ask']}) before changing {rec}s."},
            {"role": "user", "content": rng.choice(request)}]
    msgs += [call(0, ask, {"question": rng.choice([f"What is your {d['ask']}?", f"Could you give me your {d['ask']}?"])}),
             answer(0, value),
             call(1, find, shuffled({"name": name, d["key"]: value}, rng)), answer(1, uid),
             call(2, listing, {f"{who}_id": uid}),
             answer(2, json.dumps([{f"{rec}_id": r[0], fld: r[2], "status": r[3]} for r in mine]))]
    rid = target[0]
    if goal == "act":
        msgs += [call(3, act, {f"{rec}_id": rid}), answer(3, d["done"]),
                 {"role": "assistant", "content": rng.choice([f"Your {rec} {rid} is {d['done']}.",
                                                              f"Done: {rec} {rid} has been {d['done']}."])}]
    else:
        msgs.append({"role": "assistant", "content": rng.choice([f"Your {rec} {rid} is {target[3]}.",
                                                                 f"{rec.capitalize()} {rid} ({target[2]}) is {target[3]}."])})
    return msgs, tools


# --- files: the terminal's primitives on other folders and formats -------------------------------
FOLDERS = [
    dict(folder="config", ext=".ini", sep="=", names=["api", "cache", "queue", "mailer", "auth", "billing", "proxy"],
         keys=["port", "workers", "retries", "timeout"], what="service"),
    dict(folder="inventory", ext=".csv", sep=",", names=["shelf_a", "shelf_b", "shelf_c", "bin_1", "bin_2", "crate"],
         keys=["nails", "bolts", "screws", "washers"], what="store"),
    dict(folder="logs", ext=".log", sep=": ", names=["monday", "tuesday", "friday", "sunday", "night", "morning"],
         keys=["errors", "warnings", "requests", "restarts"], what="log"),
    dict(folder="scores", ext=".dat", sep=" ", names=["red", "blue", "green", "gold", "grey", "pink"],
         keys=["wins", "losses", "draws", "points"], what="team"),
]
SHELLS = ["shell", "sh", "execute", "bash", "terminal", "exec_cmd", "console"]
SHELL_PARAMS = ["command", "cmd", "script", "line"]
CONTENT_WORDS = ["ready", "synced", "clean", "ok", "passed", "closed"]


def write_and_read_back(rng: random.Random, run, target: str, content: str) -> None:
    """The shell families' file writing: echo the content into the file, then read it back."""
    run(rng.choice([f"echo {content} > {target}", f"echo '{content}' > {target}"]), "(no output)")
    run(f"cat {target}", content)


def files_doc(rng: random.Random) -> tuple[list, list]:
    f = rng.choice(FOLDERS)
    shell, param = tool_word(rng, SHELLS), rng.choice(SHELL_PARAMS)
    names = rng.sample(f["names"], rng.randint(3, 5))
    contents = {n: {k: rng.randint(0, 99) for k in rng.sample(f["keys"], 3)} for n in names}
    folder, ext, sep = f["folder"], f["ext"], f["sep"]
    kind = rng.choice(["value", "value", "count", "create"])
    tools = [tool(shell, "Run a shell command in the work folder.", **{param: "The command line."})]
    system = f"Operations agent in a work folder. Use {shell} to run commands, then answer."
    msgs: list = []
    n = 0

    def run(cmd: str, out: str):
        nonlocal n
        msgs.extend([call(n, shell, {param: cmd}), answer(n, out)])
        n += 1

    listing = "\n".join(sorted(name + ext for name in names))
    if kind == "value":
        name = rng.choice(names)
        key, value = rng.choice(list(contents[name].items()))
        path = f"{folder}/{name}{ext}"
        lines = [f"{k}{sep}{v}" for k, v in contents[name].items()]
        ask = rng.choice([f"What is the {key} value in the {name} {f['what']} file?", f"Find {key} for {name} in {folder}."])
        run(rng.choice([f"ls {folder}", f"ls -1 {folder}"]), listing)
        how = rng.choice(["cat", "grep", "grep -n"])
        if how == "cat":
            run(f"cat {path}", "\n".join(lines))
        else:
            i = next(i for i, ln in enumerate(lines) if ln.startswith(key))
            run(f"{how} {key} {path}", (f"{i + 1}:" if how == "grep -n" else "") + lines[i])
        final = rng.choice([f"The {key} is {value}.", f"{value}", f"It is {value}."])
    elif kind == "count":
        ask = rng.choice([f"How many files are in {folder}?", f"Count the files in the {folder} folder."])
        run(rng.choice([f"ls {folder} | wc -l", f"ls -1 {folder} | wc -l"]), str(len(names)))
        final = rng.choice([f"There are {len(names)} files.", f"{len(names)} files."])
    else:
        target, content = rng.choice(["status.txt", "flag.txt", "note.txt"]), rng.choice(CONTENT_WORDS)
        ask = rng.choice([f"Create {target} containing {content}.", f"Write {content} into a new file {target}."])
        write_and_read_back(rng, run, target, content)
        final = rng.choice([f"Created {target}.", "Done."])
    return [{"role": "system", "content": system}, {"role": "user", "content": ask}, *msgs,
            {"role": "assistant", "content": final}], tools


# --- lookup: search's two hops over another knowledge source -------------------------------------
CATALOGUES = [
    dict(a="song", b="band", rel="was written by", attr="comes from", values=["Norvik", "Solmar", "Estria",
                                                                             "Valdez", "Kirran", "Oduna"],
         q="Where does the band that wrote {x} come from?", ans="comes from"),
    dict(a="dish", b="chef", rel="was created by", attr="trained in", values=["Lyon", "Osaka", "Puebla",
                                                                             "Napoli", "Izmir", "Hue"],
         q="Where did the chef who created {x} train?", ans="trained in"),
    dict(a="ship", b="captain", rel="is commanded by", attr="was born on", values=["Corsica", "Malta", "Crete",
                                                                                  "Java", "Samoa", "Tonga"],
         q="On which island was the captain of {x} born?", ans="was born on"),
    dict(a="novel", b="author", rel="was written by", attr="lives in", values=["Tallinn", "Ghent", "Bergen",
                                                                              "Malmo", "Turku", "Basel"],
         q="In which city does the author of {x} live?", ans="lives in"),
]
FINDERS = ["lookup", "query", "find", "seek", "search_catalog", "search_index", "scan"]
READERS = ["read", "fetch", "show", "get_entry", "view_entry", "load", "open_entry"]
ENTRY_PARAMS = ["entry_id", "id", "key", "entry", "ref"]


def retrieve(docs: dict, query: str, k: int = 3) -> str:
    """The k entries sharing most words with the query, as `id: first sentence` lines."""
    words = set(re.findall(r"\w+", query.lower()))
    scored = sorted(((len(words & set(re.findall(r"\w+", t.lower()))), i) for i, t in docs.items()),
                    key=lambda x: -x[0])
    hits = [i for s, i in scored[:k] if s > 0]
    return "\n".join(f"{i}: {docs[i].split('.')[0]}" for i in hits) or "no results"


def lookup_doc(rng: random.Random) -> tuple[list, list]:
    c = rng.choice(CATALOGUES)
    find, read, param = tool_word(rng, FINDERS), tool_word(rng, READERS), rng.choice(ENTRY_PARAMS)
    bs = {f"{word(rng)} {word(rng)}": rng.choice(c["values"]) for _ in range(4)}
    items = [(word(rng, 3), rng.choice(list(bs))) for _ in range(4)]
    docs = {}
    for i, (x, b) in enumerate(items):
        docs[f"{c['a'][:2]}{i}"] = f"{x} is a {c['a']}. {x} {c['rel']} {b}."
    for i, (b, v) in enumerate(bs.items()):
        docs[f"{c['b'][:2]}{i}"] = f"{b} is a {c['b']}. {b} {c['attr']} {v}."
    order = list(docs)
    rng.shuffle(order)
    docs = {k: docs[k] for k in order}
    x, b = rng.choice(items)
    tools = [tool(find, "Search the catalogue.", query="Search words."),
             tool(read, "Read an entry.", **{param: "The entry id."})]
    msgs = [{"role": "system", "content": f"Catalogue assistant. Use {find} and {read} to find facts, then answer briefly."},
            {"role": "user", "content": c["q"].format(x=x)}]
    xid = next(i for i, t in docs.items() if t.startswith(f"{x} is"))
    bid = next(i for i, t in docs.items() if t.startswith(f"{b} is"))
    for n, (query, target) in enumerate([(rng.choice([x, f"{x} {c['a']}"]), xid),
                                          (rng.choice([b, f"{b} {c['b']}"]), bid)]):
        out = retrieve(docs, query)
        if f"{target}:" not in out:  # the entry asked for is found, among at most three
            out = "\n".join([f"{target}: {docs[target].split('.')[0]}"] + out.split("\n")[:2])
        msgs += [call(2 * n, find, {"query": query}), answer(2 * n, out),
                 call(2 * n + 1, read, {param: target}), answer(2 * n + 1, docs[target])]
    v = bs[b]
    msgs.append({"role": "assistant", "content": rng.choice([f"{v}.", f"{b} {c['ans']} {v}.", f"It is {v}."])})
    return msgs, tools


# --- bugs: code's and repo's primitives on other bug families ------------------------------------
# (name, args, correct body, buggy body, inputs drawn by `_inputs`)
BUG_FAMILIES = [
    ("shout", "s", "s.upper()", "s.lower()", "s"),
    ("whisper", "s", "s.lower()", "s.upper()", "s"),
    ("initial", "s", "s[0]", "s[-1]", "s"),
    ("final_char", "s", "s[-1]", "s[0]", "s"),
    ("backwards", "s", "s[::-1]", "s", "s"),
    ("doubled", "s", "s + s", "s", "s"),
    ("first_item", "xs", "xs[0]", "xs[1]", "xs"),
    ("last_item", "xs", "xs[-1]", "xs[0]", "xs"),
    ("smallest", "xs", "min(xs)", "max(xs)", "xs"),
    ("biggest", "xs", "max(xs)", "min(xs)", "xs"),
    ("total", "xs", "sum(xs)", "len(xs)", "xs"),
    ("count_items", "xs", "len(xs)", "len(xs) - 1", "xs"),
    ("is_even", "n", "n % 2 == 0", "n % 2 == 1", "n"),
    ("is_odd", "n", "n % 2 == 1", "n % 2 == 0", "n"),
    ("is_positive", "n", "n > 0", "n < 0", "n"),
    ("above_ten", "n", "n > 10", "n < 10", "n"),
    ("tail_part", "s", "s[1:]", "s[:-1]", "s"),
    ("length", "s", "len(s)", "len(s) + 1", "s"),
    ("as_title", "s", "s.title()", "s.upper()", "s"),
    ("ascending", "xs", "sorted(xs)", "sorted(xs, reverse=True)", "xs"),
    ("reversed_list", "xs", "xs[::-1]", "xs", "xs"),
    ("middle", "xs", "xs[1]", "xs[2]", "xs"),
    ("is_zero", "n", "n == 0", "n != 0", "n"),
    ("is_small", "n", "n < 5", "n > 5", "n"),
    ("negated", "n", "-n", "n", "n"),
    ("twice", "n", "2 * n", "n * n", "n"),
]
VIEWERS = ["read_file", "open_file", "show", "cat_file", "display", "show_file"]
EDITORS = ["replace", "patch", "substitute", "modify", "rewrite", "replace_text"]
TESTERS = ["test", "pytest", "check", "run_suite", "verify", "run_checks"]
PATH_PARAMS, OLD_PARAMS, NEW_PARAMS = ["file", "name", "path", "filename"], ["find", "before", "old", "target"], \
    ["replace_with", "after", "new", "replacement"]
MODULE_NAMES = ["text_tools", "lists", "checks", "words", "helpers", "filters"]


def _inputs(kind: str, rng: random.Random):
    if kind == "s":
        return repr(rng.choice(["cab", "Ola", "tree", "Moss", "quiz", "kiwi"]))
    if kind == "xs":
        return repr([rng.randint(1, 9) for _ in range(3)])
    return str(rng.choice([-3, 1, 4, 7, 12, 15]))


def _bug_function(rng: random.Random, taken: set) -> tuple:
    """A function of a family none of whose names or bodies `taken` holds (each edit has one place
    to go)."""
    name, args, good, bad, kind = rng.choice([f for f in BUG_FAMILIES if not {f[0], f[2], f[3]} & taken]
                                             or BUG_FAMILIES[:1])
    cases = []
    for _ in range(2):
        x = _inputs(kind, rng)
        cases.append((x, repr(eval(good, {}, {args: eval(x)}))))
    return name, args, good, bad, cases


def _caught(f) -> bool:
    name, args, good, bad, cases = f
    return any(repr(eval(bad, {}, {args: eval(x)})) != r for x, r in cases)


def bugs_doc(rng: random.Random, modules: int | None = None) -> tuple[list, list]:
    """One module and one bug (code's sibling), or 2-4 modules and 2-4 bugs (repo's)."""
    modules = modules or rng.choice([1, 1, 2, 3])
    view, edit, test = tool_word(rng, VIEWERS), tool_word(rng, EDITORS), tool_word(rng, TESTERS)
    p_path, p_old, p_new = rng.choice(PATH_PARAMS), rng.choice(OLD_PARAMS), rng.choice(NEW_PARAMS)
    names = rng.sample(MODULE_NAMES, modules)
    taken: set = set()
    funcs = []
    for _ in range(3 * modules):
        f = _bug_function(rng, taken)
        taken.update(f[:1] + f[2:4])
        funcs.append(f)
    bugs = sorted(rng.sample([i for i, f in enumerate(funcs) if _caught(f)],
                             min(len([f for f in funcs if _caught(f)]), 1 if modules == 1 else rng.randint(2, 4))))
    source = {f"{mod}.py": module_source(funcs[3 * m:3 * m + 3], {b - 3 * m for b in bugs})
              for m, mod in enumerate(names)}
    tools = [tool(view, "Show a file.", **{p_path: "File name."}),
             tool(edit, "Replace text in a file.", **{p_path: "File name.", p_old: "Text to replace.", p_new: "New text."}),
             tool(test, "Run the unit tests.")]
    files = " and ".join(source)
    msgs = [{"role": "system", "content": f"Coding agent. Make the tests pass by fixing {files}."},
            {"role": "user", "content": rng.choice(["Some tests fail. Please fix the code.", "Fix the bugs.",
                                                    "The test suite is red; make it pass."])}]
    n = 0

    def act(name: str, args: dict, out: str):
        nonlocal n
        msgs.extend([call(n, name, args), answer(n, out)])
        n += 1

    remaining = list(bugs)
    total = len(funcs)

    def report() -> str:
        if not remaining:
            return f"{total} passed"
        b = remaining[0]
        tfile = f"test_{names[b // 3]}.py"
        where = f"{tfile}::test_{funcs[b][0]}" if modules > 1 else f"test_{funcs[b][0]}"
        return f"FAILED {where}; 1 failed" + (f", {b} passed" if b else "")

    if modules > 1 or rng.random() < 0.5:
        act(test, {}, report())  # the failing test names the function
    viewed: set = set()
    while remaining:
        b = remaining[0]
        path = f"{names[b // 3]}.py"
        if path not in viewed:
            act(view, {p_path: path}, source[path])
            viewed.add(path)
        name, _, good, bad, _ = funcs[b]
        # a form of the line found once in the file (so the replacement lands on it), like repo's expert
        forms = [(o, n) for o, n in [(f"return {bad}", f"return {good}"), (bad, good)] if source[path].count(o) == 1]
        old, new = rng.choice(forms or [(f"def {name}({funcs[b][1]}):\n    return {bad}",
                                         f"def {name}({funcs[b][1]}):\n    return {good}")])
        act(edit, shuffled({p_path: path, p_old: old, p_new: new}, rng), "edited")
        source[path] = source[path].replace(old, new, 1)
        remaining.pop(0)
        act(test, {}, report())
    msgs.append({"role": "assistant", "content": rng.choice(["All tests pass now.", "Fixed: the tests pass.",
                                                             f"I fixed {', '.join(funcs[b][0] for b in bugs)}."])})
    return msgs, tools


# --- primitives: the decisions alone --------------------------------------------------------------
def primitive_doc(rng: random.Random) -> tuple[list, list]:
    kind = rng.choice(["pick", "copy", "failing"])
    if kind == "pick":  # one record of N by an attribute
        things = rng.sample(["kayak", "violin", "sofa", "drone", "easel", "piano", "bike", "oven"], rng.randint(3, 5))
        rows = [{"id": f"{rng.choice('KQXZ')}{rng.randint(100, 9999)}", "thing": t,
                 "state": rng.choice(["open", "closed", "held"])} for t in things]
        row = rng.choice(rows)
        if rng.random() < 0.5:
            q, a = f"Which id is the {row['thing']}?", row["id"]
        else:
            q, a = f"What state is the {row['thing']} in?", row["state"]
        return [{"role": "user", "content": json.dumps(rows) + "\n" + q}, {"role": "assistant", "content": a}], []
    if kind == "copy":  # the value from the matching line
        keys = rng.sample(["bravo", "echo", "kilo", "oscar", "tango", "victor", "yankee", "zulu"], rng.randint(3, 5))
        sep = rng.choice(["=", ": ", " ", ","])
        lines = {k: str(rng.randint(0, 999)) for k in keys}
        k = rng.choice(keys)
        text = "\n".join(f"{key}{sep}{v}" for key, v in lines.items())
        return [{"role": "user", "content": f"{text}\nWhat is {k}?"}, {"role": "assistant", "content": lines[k]}], []
    f = rng.choice(BUG_FAMILIES)  # the function a failing test points at
    mod = rng.choice(MODULE_NAMES)
    where = rng.choice([f"test_{f[0]}", f"test_{mod}.py::test_{f[0]}"])
    q = f"FAILED {where}; 1 failed, {rng.randint(0, 5)} passed\nWhich function is broken?"
    a = f[0] if "::" not in where else rng.choice([f[0], f"{f[0]} in {mod}.py"])
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}], []


# --- keyed: the terminal's lookup and writing, every entity made up ------------------------------
EXTS = [".txt", ".cfg", ".env", ".ini", ".conf"]


def value_answer(rng: random.Random, key: str, value: str) -> str:
    """An answer that gives a looked-up value, in one of the terminal expert's three shapes."""
    return rng.choice([f"The {key} is {value}.", value, f"It is {value}."])


def made_up(rng: random.Random, n: int) -> list[str]:
    """`n` distinct made-up lower-case words."""
    out: list[str] = []
    while len(out) < n:
        w = word(rng, rng.choice([2, 3])).lower()
        if w not in out:
            out.append(w)
    return out


def keyed_doc(rng: random.Random) -> tuple[list, list]:
    shell, param = tool_word(rng, SHELLS), rng.choice(SHELL_PARAMS)
    n_names, n_keys = rng.randint(3, 5), rng.randint(3, 5)
    folder, *words = made_up(rng, 1 + n_names + n_keys)  # one draw: no key is also a file's name
    names, keys = words[:n_names], words[n_names:]
    ext = rng.choice(EXTS)
    tools = [tool(shell, "Run a shell command in the workspace.", **{param: "The command line."})]
    system = f"Agent in the {folder} workspace. Use {shell} to run commands, then answer."
    msgs: list = []

    def run(cmd: str, out: str):
        msgs.extend([call(len(msgs) // 2, shell, {param: cmd}), answer(len(msgs) // 2, out)])

    if rng.random() < 0.75:  # the value on the asked key among several lines, read with cat
        name = rng.choice(names)
        lines = {k: str(rng.randint(0, 99)) for k in keys}
        key = rng.choice(list(lines))
        ask = rng.choice([f"Which {key} does {name} have?", f"Look up {key} for {name} in {folder}.",
                          f"Read {key} from the {name} file."])
        run(rng.choice([f"ls {folder}", f"ls -1 {folder}", f"ls {folder}/"]), "\n".join(sorted(n + ext for n in names)))
        run(f"cat {folder}/{name}{ext}", "\n".join(f"{k}={v}" for k, v in lines.items()))
        final = value_answer(rng, key, lines[key])
    else:  # write the asked word into the asked file, read it back
        target, content = names[0] + rng.choice([".txt", ".out", ".flag"]), names[1]
        ask = rng.choice([f"Put {content} into a new file {target}.", f"Make {target} hold the word {content}."])
        write_and_read_back(rng, run, target, content)
        final = rng.choice([f"Wrote {target}.", "Done."])
    return [{"role": "system", "content": system}, {"role": "user", "content": ask}, *msgs,
            {"role": "assistant", "content": final}], tools


# --- records: many lookups by key in one printed record -------------------------------------------
# `keyed` holds one lookup a document: a few answer tokens against hundreds of others, and 300 steps of
# it did not teach the lookup (results/pretrain/README.md, phase 6t). Here one `cat` is followed by 3-6 questions, each
# its own turn and each answered from the same lines, so most answer tokens are lookups.
ATTRIBUTES = ["size", "cost", "age", "depth", "speed", "level", "score", "height", "width", "weight", "price",
              "stock", "volume", "length", "rank", "grade", "load", "margin", "quota", "limit"]


def records_doc(rng: random.Random, listed: bool = False) -> tuple[list, list]:
    shell, param = tool_word(rng, SHELLS), rng.choice(SHELL_PARAMS)
    folder, name, *made = made_up(rng, 2 + 5)
    pool = made + [a for a in ATTRIBUTES if a not in made]
    keys = rng.sample(pool if rng.random() < 0.5 else ATTRIBUTES, rng.randint(3, 5))
    lines = {k: str(rng.randint(0, 99)) for k in keys}
    tools = [tool(shell, "Run a shell command in the workspace.", **{param: "The command line."})]
    ext = rng.choice(EXTS)
    path = f"{folder}/{name}{ext}"
    asked = [rng.choice(keys) for _ in range(rng.randint(3, 6))]
    msgs = []
    if listed:  # the folder listed first and the file named by its stem, as a shell task asks
        others = [w for w in made_up(rng, 6) if w not in (folder, name, *keys)][:rng.randint(2, 4)]
        msgs = [call(0, shell, {param: f"ls {folder}"}), answer(0, "\n".join(sorted(n + ext for n in [name, *others])))]
    n = len(msgs) // 2
    msgs += [call(n, shell, {param: f"cat {path}"}), answer(n, "\n".join(f"{k}={v}" for k, v in lines.items())),
             {"role": "assistant", "content": value_answer(rng, asked[0], lines[asked[0]])}]
    for key in asked[1:]:
        msgs += [{"role": "user", "content": rng.choice([f"And {key}?", f"What about {key}?", f"Now {key}."])},
                 {"role": "assistant", "content": value_answer(rng, key, lines[key])}]
    ask = rng.choice([f"What is the {asked[0]} value for {name}?", f"Find the {asked[0]} of {name} in {folder}."]
                     if listed else [f"What is the {asked[0]} in {path}?", f"Read {asked[0]} from {path}."])
    return [{"role": "system", "content": f"Agent in the {folder} workspace. Use {shell} to run commands, then answer."},
            {"role": "user", "content": ask}, *msgs], tools


def listed_records_doc(rng: random.Random) -> tuple[list, list]:
    """`records` after an `ls` of the folder, the question naming the file by its stem (phase 8t's
    lookup, learnt in `records`, did not carry to a listing and a question of that shape)."""
    return records_doc(rng, listed=True)


FAMILIES = {"desk": desk_doc, "files": files_doc, "lookup": lookup_doc, "bugs": bugs_doc, "primitives": primitive_doc}
# Families added after phases 1-5 were trained: in a mixture only when `family_docs` names them, so
# that those phases' commands build the same mixtures as before.
LATER_FAMILIES = {"keyed": keyed_doc, "records": records_doc, "listed_records": listed_records_doc}
