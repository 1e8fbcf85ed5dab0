"""The regime gate (pivotrl.lab.gate): each criterion decides, and the command measures a real base."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("reasoning_gym")

from pivotrl.lab.gate import GateThresholds, verdict  # noqa: E402


def in_regime() -> dict:
    """Figures of a base the gate accepts: hard but not hopeless, decisive turns mostly pivots."""
    turn = lambda n, all_fail, pivots, correct: dict(states=n, all_fail=all_fail, pivots=pivots, greedy_correct=correct)  # noqa: E731
    return {"success": {"tooluse": 0.2, "terminal": 0.45, "search": 0.15, "code": 0.3},
            "failures": {"tooluse": {"find_user/copy": 30, "message/decision": 9},
                         "code": {"edit/decision": 40, "run_tests/copy": 5}},
            "turns": {"tooluse": {"find_user/copy": turn(20, 4, 10, 12), "message/decision": turn(20, 0, 2, 18)},
                      "code": {"edit/decision": turn(10, 2, 5, 4), "run_tests/copy": turn(10, 0, 0, 10)}},
            "candidates": 100, "pivots": 25}


def failing(figures: dict) -> set[str]:
    return {c["criterion"] for c in verdict(figures)["checks"] if not c["holds"]}


def test_a_base_in_the_regime_passes():
    v = verdict(in_regime())
    assert v["passed"] and failing(in_regime()) == set()
    assert v["thresholds"]["success_low"] == GateThresholds().success_low == 0.10


@pytest.mark.parametrize("change, criterion", [
    (lambda f: f["success"].update(terminal=0.6), "terminal: episode success"),
    (lambda f: f["success"].update(tooluse=0.05), "tooluse: episode success"),
    (lambda f: f["success"].update(tooluse=0.3, search=0.3), "domains at or below the hard line"),
    # the lab's old base: its decisive turn is never right, so never a pivot
    (lambda f: f["turns"]["tooluse"].update({"find_user/copy": dict(states=20, all_fail=17, pivots=2, greedy_correct=1)}),
     "tooluse find_user/copy: decisive, all-fail share"),
    (lambda f: f["turns"]["code"].update({"edit/decision": dict(states=10, all_fail=0, pivots=3, greedy_correct=7)}),
     "code edit/decision: decisive, pivot share"),
    (lambda f: f["turns"]["tooluse"]["message/decision"].update(greedy_correct=16), "tooluse message/decision: routine, greedy accuracy"),
    (lambda f: f.update(pivots=40), "pivots among candidates"),
    (lambda f: f.update(pivots=10), "pivots among candidates"),
    (lambda f: f["failures"]["code"].update({"turn_limit/turn_limit": 30}), "code turn_limit/turn_limit: decisive, profiled states"),
])
def test_each_criterion_can_fail_the_base(change, criterion):
    figures = in_regime()
    change(figures)
    assert criterion in {c["criterion"] for c in verdict(figures)["checks"]}
    assert criterion in failing(figures) and not verdict(figures)["passed"]


def test_a_gate_criterion_says_how_many_standard_errors_it_clears_its_bound_by():
    def margin(figures, criterion):
        return next(c["margin_se"] for c in verdict(figures)["checks"] if c["criterion"] == criterion)

    figures = in_regime()
    name = "tooluse find_user/copy: decisive, all-fail share"  # 4 of 20 all-fail, bound 0.3
    assert margin(figures, name) == pytest.approx(round((0.3 - 0.2) / (0.21 / 20) ** 0.5, 2))
    figures["turns"]["tooluse"]["find_user/copy"].update(states=80, all_fail=16, pivots=40)  # the same share, 4x states
    assert margin(figures, name) == pytest.approx(2 * margin(in_regime(), name), abs=0.02)
    figures["turns"]["tooluse"]["find_user/copy"].update(all_fail=60)  # fails: a negative margin
    assert margin(figures, name) < 0
    figures["episodes"] = {"tooluse": 50}
    assert margin(figures, "tooluse: episode success") > 0


def test_a_turn_type_becomes_decisive_at_a_quarter_of_the_failures():
    figures = in_regime()  # message/decision: 9 of 39 tooluse failures, under a quarter: routine
    names = {c["criterion"] for c in verdict(figures)["checks"]}
    assert "tooluse message/decision: routine, greedy accuracy" in names
    assert "tooluse message/decision: decisive, pivot share" not in names
    figures["failures"]["tooluse"]["message/decision"] = 10  # 10 of 40: decisive, and 2 of its 20 states pivots
    assert "tooluse message/decision: decisive, pivot share" in failing(figures)
    assert "tooluse message/decision: routine, greedy accuracy" not in {c["criterion"] for c in verdict(figures)["checks"]}


def test_the_gate_command_measures_the_bundled_base(tmp_path):
    from pivotrl.cli import app

    out = tmp_path / "gate.json"
    r = CliRunner().invoke(app, ["lab", "gate", "--tasks", "2", "--trajectories", "1", "--k", "2", "-o", str(out)])
    result = json.loads(out.read_text())
    assert r.exit_code == (0 if result["passed"] else 1), r.output
    assert set(result["success"]) == {"tooluse", "terminal", "search", "code"}
    assert result["candidates"] == sum(row["states"] for rows in result["turns"].values() for row in rows.values())
    assert all(0 <= c["value"] for c in result["checks"]) and "regime gate" in r.output
    # one domain alone: the full gate's figures for it, and every criterion of that domain
    alone = tmp_path / "terminal.json"
    r = CliRunner().invoke(app, ["lab", "gate", "--tasks", "2", "--trajectories", "1", "--k", "2", "--domain",
                                 "terminal", "-o", str(alone)])
    part = json.loads(alone.read_text())
    assert r.exit_code == 1, r.output  # the hard line needs two domains: a gate of one never passes whole
    assert part["success"] == {"terminal": result["success"]["terminal"]}
    assert part["turns"] == {"terminal": result["turns"]["terminal"]}
    assert part["domains"] == {"terminal": result["domains"]["terminal"]}
    own = lambda g: [c for c in g["checks"] if c["domain"] == "terminal"]  # noqa: E731
    assert own(part) == own(result) and own(part)
    r = CliRunner().invoke(app, ["lab", "gate", "--domain", "chess", "-o", str(alone)])
    assert r.exit_code == 2 and "chess" in r.output
    # the long-horizon domain, gated by name (the full gate is the four)
    r = CliRunner().invoke(app, ["lab", "gate", "--tasks", "1", "--trajectories", "1", "--k", "2", "--domain",
                                 "repo", "-o", str(alone)])
    repo = json.loads(alone.read_text())
    assert r.exit_code == 1 and set(repo["success"]) == set(repo["turns"]) == {"repo"}, r.output
    assert {c["domain"] for c in repo["checks"]} == {"repo", None}


def gate_of(model: str, change=lambda f: None) -> dict:
    figures = {"model": model, **in_regime()}
    change(figures)
    return figures


def test_each_domain_takes_the_earliest_checkpoint_that_holds_its_own_criteria():
    from pivotrl.lab.gate import choose_domain_bases

    early = gate_of("step-200", lambda f: f["success"].update(terminal=0.7))  # terminal too easy here
    late = gate_of("step-400", lambda f: f["success"].update(tooluse=0.02))   # tooluse lost, terminal in band
    chosen = choose_domain_bases([early, late])
    assert chosen["bases"] == {"tooluse": "step-200", "terminal": "step-400", "search": "step-200", "code": "step-200"}
    assert chosen["passed"] and not verdict(early)["passed"] and not verdict(late)["passed"]
    assert verdict(early)["domains"] == {"tooluse": True, "terminal": False, "search": True, "code": True}


def test_the_criteria_across_domains_apply_to_the_chosen_set():
    from pivotrl.lab.gate import choose_domain_bases

    # every domain holds its own criteria, but only one is at or below the hard line
    easy = gate_of("step-200", lambda f: f["success"].update(tooluse=0.3, search=0.3))
    chosen = choose_domain_bases([easy])
    assert set(chosen["bases"]) == {"tooluse", "terminal", "search", "code"} and not chosen["passed"]
    assert [c["criterion"] for c in chosen["checks"] if not c["holds"]] == ["domains at or below the hard line"]
    # the pivot share is the chosen domains' own: 17 pivots among 60 profiled states here
    share = next(c for c in chosen["checks"] if c["criterion"] == "pivots among candidates")
    assert share["value"] == round(17 / 60, 4)


def test_a_domain_no_checkpoint_holds_has_no_base():
    from pivotrl.lab.gate import choose_domain_bases

    weak = lambda f: f["turns"]["code"].update({"edit/decision": dict(states=10, all_fail=9, pivots=1, greedy_correct=0)})  # noqa: E731
    chosen = choose_domain_bases([gate_of("step-200", weak), gate_of("step-400", weak)])
    assert "code" not in chosen["bases"] and not chosen["passed"]
    assert "code: a checkpoint holds every criterion of the domain" in {c["criterion"] for c in chosen["checks"] if not c["holds"]}


def test_a_gate_of_one_domain_can_be_its_base():
    from pivotrl.lab.gate import choose_domain_bases

    full = gate_of("step-200", lambda f: f["success"].update(tooluse=0.02))  # tooluse too hard here
    alone = gate_of("step-300", lambda f: [f[k].pop(d, None) for k in ("success", "failures", "turns")
                                           for d in ("terminal", "search", "code")])  # tooluse measured alone
    chosen = choose_domain_bases([full, alone])
    assert chosen["bases"] == {"tooluse": "step-300", "terminal": "step-200", "search": "step-200", "code": "step-200"}
    assert chosen["passed"]
    assert "tooluse" not in choose_domain_bases([full])["bases"]


def test_the_bases_command_reads_gate_files_in_training_order(tmp_path):
    from pivotrl.cli import app

    files = []
    for name, change in (("a", lambda f: f["success"].update(terminal=0.7)), ("b", lambda f: None)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(gate_of(f"step-{name}", change)))
    out = tmp_path / "bases.json"
    r = CliRunner().invoke(app, ["lab", "bases", *map(str, files), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["bases"]["terminal"] == "step-b"
    r = CliRunner().invoke(app, ["lab", "bases", str(files[0]), "-o", str(out)])
    assert r.exit_code == 1 and "terminal" in json.loads(out.read_text())["checks"][1]["criterion"]
    (tmp_path / "c.json").write_text(json.dumps(gate_of("step-c", lambda f: [f["success"].pop(d) for d in ("tooluse", "code")])))
    r = CliRunner().invoke(app, ["lab", "bases", str(files[0]), str(tmp_path / "c.json"), "-o", str(out)])
    assert r.exit_code == 0, r.output  # terminal's base from c, measured on terminal and search only
    assert json.loads(out.read_text())["bases"]["terminal"] == "step-c"
    (tmp_path / "bad.json").write_text('{"success": 1}')
    r = CliRunner().invoke(app, ["lab", "bases", str(tmp_path / "bad.json"), "-o", str(out)])
    assert r.exit_code == 2 and "bad.json" in r.output
