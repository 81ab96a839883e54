"""Hostile rule sets are refused with problems, never crash (issue 13, items 7 and 8).

Each input the issue names (990 nested `not`, 3,900 unary minus, YAML nested 5,000
deep, an alias bomb, `1e400`, `1e308 * 10`, a rule durable_rules refuses with its
error 113, a file over the size limit, too many rules) goes through `load_ruleset`,
`LiveRules.reload` and `fengkong rules check` run as a process, and must come back as
problems naming the file (and the rule where one is known) while the live set stays.
Arithmetic that overflows at evaluation is evaluated without raising, false, the
same in durable_rules, the plain-Python reference and the vectorized evaluator. A
refused set is remembered by its files' hash: reloading or watching it unchanged
builds nothing. Property tests throw token soups and random well-formed trees with
extreme constants at the parser, checker, compiler and evaluator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durable_rules_engine

from fengkong.engine import LiveRules, RuleSetError, load_ruleset
from fengkong.engine.errors import Problem
from fengkong.engine.durable_backend import DurableRefused, DurableRuleset, alpha_stack_peak, unique_name
from fengkong.engine.durable_backend.alpha import pack
from fengkong.engine.language import parse
from fengkong.engine.limits import MAX_EXPR_DEPTH, MAX_FILE_BYTES, MAX_RULES, MAX_YAML_DEPTH, Limits
from fengkong.engine.policy import Policy
from fengkong.engine.predicates import compile_predicate
from fengkong.engine.rule import build_rule
from fengkong.engine.ruleset import compile_ruleset
from fengkong.engine.schema import Schema, read_lists
from fengkong.engine.vectorized import VectorizedRules
from fengkong.features.definitions import CATALOG

ROOT = Path(__file__).resolve().parent.parent
FILE = "rules/hostile.yaml"
RID = "hostile.rule"
GOOD_RULE = ("  - id: good.big_amount\n    description: large amount\n    when: event.amount >= 1000\n"
             "    then: review\n    score: 10\n")
#: a rule of 60 clauses, each comparing two features: durable_rules refuses it (its error 113)
WIDE = " or ".join(f"event.amount > {name}" for name in
                   [n for n, spec in CATALOG.items() if spec.dtype == "number" and n != "event.amount"][:60])


def rule_text(when: str, rid: str = RID) -> str:
    """One rule whose `when` is ``when``, as YAML (single-quoted, quotes doubled)."""
    quoted = when.replace("'", "''")
    return f"  - id: {rid}\n    description: hostile\n    when: '{quoted}'\n    then: deny\n    score: 10\n"


def make_set(root: Path, files: dict[str, str]) -> Path:
    """A rules folder: the default pack's list declarations, one good rule, and ``files``."""
    rules = root / "rules"
    (rules / "lists").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "rules" / "lists" / "lists.yaml", rules / "lists" / "lists.yaml")
    (rules / "good.yaml").write_text("rules:\n" + GOOD_RULE, encoding="utf-8")
    for name, content in files.items():
        (rules / name).write_text(content, encoding="utf-8")
    return rules


def nested_yaml(depth: int) -> str:
    return "rules:\n" + rule_text("event.amount > 1").replace("description: hostile",
                                                              "description: " + "[" * depth + "]" * depth)


def alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\nrules:\n" + rule_text("event.amount > 1")


#: name -> (files of the hostile set, the rule id its problem names or None, a word of the reason)
HOSTILE: dict[str, tuple[dict[str, str], str | None, str]] = {
    "990 nested not": ({"hostile.yaml": "rules:\n" + rule_text("not " * 990 + "event.is_night")}, RID, "in a row"),
    "990 nested brackets": (
        {"hostile.yaml": "rules:\n" + rule_text("(" * 990 + "event.is_night" + ")" * 990)}, RID, "brackets"),
    "3,900 unary minus": ({"hostile.yaml": "rules:\n" + rule_text("event.amount > " + "-" * 3900 + "1")}, RID,
                          "in a row"),
    "a sum of 100 terms": (
        {"hostile.yaml": "rules:\n" + rule_text("event.amount > " + " + ".join(["user.sum_1h"] * 100))}, RID,
        "levels deep"),
    "a list of 700 items": ({"hostile.yaml": "rules:\n" + rule_text("event.amount in [" + "1," * 700 + "]")}, RID,
                            "tokens"),
    "1e400": ({"hostile.yaml": "rules:\n" + rule_text("event.amount > 1e400")}, RID, "range"),
    "1e308 * 10": ({"hostile.yaml": "rules:\n" + rule_text("event.amount > 1e308 * 10")}, RID, "range"),
    "an integer past 2^53": ({"hostile.yaml": "rules:\n" + rule_text("event.amount > 1" + "0" * 400 + " * 1.5")}, RID,
                             "2^53"),
    "60 clauses durable refuses": ({"hostile.yaml": "rules:\n" + rule_text(WIDE)}, RID, "error 113"),
    "YAML nested 5,000 deep": ({"hostile.yaml": nested_yaml(5000)}, None, "nested more than"),
    "YAML alias bomb": ({"hostile.yaml": alias_bomb()}, None, "aliases"),
    "a file over the size limit": ({"hostile.yaml": "rules:\n" + rule_text("event.amount > 1")
                                    + "#" * MAX_FILE_BYTES + "\n"}, None, "bytes"),
    "too many rules": ({"hostile.yaml": "rules: [" + "{}, " * MAX_RULES + "]\n"}, None, "more than"),
}


def assert_names_it(problems: list, rid: str | None, word: str) -> None:
    """A problem names the hostile file (and rule), with a reason holding ``word``."""
    hits = [p for p in problems if p.file == FILE and (rid is None or p.rule_id == rid)]
    assert hits, problems
    assert any(word in p.reason for p in hits), hits
    assert rid is None or all(p.line is not None for p in hits), hits


@pytest.mark.parametrize("name", list(HOSTILE))
def test_load_ruleset_refuses_each_hostile_input_naming_file_and_rule(tmp_path: Path, name: str) -> None:
    files, rid, word = HOSTILE[name]
    with pytest.raises(RuleSetError) as info:
        load_ruleset(make_set(tmp_path, files))
    assert_names_it(info.value.problems, rid, word)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_reload_refuses_each_hostile_input_and_keeps_the_live_set(tmp_path: Path, name: str) -> None:
    files, rid, word = HOSTILE[name]
    rules = make_set(tmp_path, {})
    live = LiveRules(rules)
    version = live.version
    for fname, content in files.items():
        (rules / fname).write_text(str(content), encoding="utf-8")
    result = live.reload()
    assert not result.ok and not result.refused_earlier
    assert_names_it(result.problems, rid, word)
    assert result.to_dict()["problems"] and result.message.startswith("refused: ")
    assert live.version == version
    assert live.evaluate({"event.amount": 5000}).fired_ids == ["good.big_amount"]


def run_check(rules: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="400")
    return subprocess.run([sys.executable, "-c", "from fengkong.cli import app; app()", "rules", "check",
                           "--rules-dir", str(rules)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("name", ["990 nested not", "3,900 unary minus", "1e400", "60 clauses durable refuses",
                                  "YAML nested 5,000 deep", "YAML alias bomb", "a file over the size limit"])
def test_rules_check_prints_problems_not_a_traceback(tmp_path: Path, name: str) -> None:
    files, rid, word = HOSTILE[name]
    done = run_check(make_set(tmp_path, files))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert "hostile.yaml" in out and word in out and (rid is None or rid in out)


def test_rules_check_prints_markup_in_a_file_as_text(tmp_path: Path) -> None:
    """A field named like console markup (``[/bold]``) is printed, not interpreted."""
    done = run_check(make_set(tmp_path, {"hostile.yaml": "rules:\n" + rule_text("event.amount > 1")
                                         + '    "[/bold]": 1\n'}))
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out
    assert "unknown field '[/bold]'" in out and RID in out


def test_rules_check_on_an_ascii_terminal_escapes_what_it_cannot_print(tmp_path: Path) -> None:
    rules = make_set(tmp_path, {"规则.yaml": "rules: [\n"})
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii")
    done = subprocess.run([sys.executable, "-c", "from fengkong.cli import app; app()", "rules", "check",
                           "--rules-dir", str(rules)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "rules/\\u89c4\\u5219.yaml:2" in done.stdout


def test_rules_check_that_cannot_finish_says_so_in_one_line_with_exit_2(tmp_path: Path) -> None:
    """Its output refused (a full device): the check itself fails, and says so in one
    line on stderr naming the folder, with exit 2, instead of a traceback."""
    rules = make_set(tmp_path, {"hostile.yaml": "rules:\n" + rule_text("event.amount > 1e400")})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", "from fengkong.cli import app; app()", "rules", "check",
                               "--rules-dir", str(rules)], stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error {rules}: the check could not finish (OSError")


class _Creates:
    """durable's C module, given to `DurableRuleset` as its ``engine``: records the
    rules of every ruleset it is asked to create, and passes each call on."""

    def __init__(self) -> None:
        self.created: list[list[str]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(durable_rules_engine, name)

    def create_ruleset(self, name: str, text: str) -> object:
        self.created.append(sorted(json.loads(text)))
        return durable_rules_engine.create_ruleset(name, text)


def test_durable_refusing_a_shard_of_several_rules_names_only_the_rule_it_refuses() -> None:
    """A rule durable refuses (error 113), packed with others: the shard is tried rule
    by rule, and only that rule is named."""
    numbers = [n for n, spec in CATALOG.items() if spec.dtype == "number" and n != "event.amount"]
    wide = " and ".join(f"event.amount > {name}" for name in numbers[:20])
    conditions = [("good", parse("event.amount >= 1000")), ("wide", parse(wide)), ("other", parse("event.is_night"))]
    engine = _Creates()
    with pytest.raises(DurableRefused) as info:
        DurableRuleset(unique_name("hostile"), conditions, SCHEMA.dtypes, engine=engine)
    assert [key for key, _ in info.value.refusals] == ["wide"] and "error 113" in info.value.refusals[0][1]
    assert engine.created == [["r0", "r1", "r2"], ["r0"], ["r0"], ["r0"]]  # one shard, then each rule alone


def test_limits_can_be_set_per_load(tmp_path: Path) -> None:
    """`Limits` lowers (or raises) the set's bytes and rule count for one load."""
    rules = make_set(tmp_path, {"more.yaml": "rules:\n" + rule_text("event.amount > 1", "more.one")
                                + rule_text("event.amount > 2", "more.two")})
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules, Limits(rules=2))
    assert any("more than 2 rules" in p.reason and p.file == "rules/more.yaml" for p in info.value.problems)
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules, Limits(set_bytes=100))
    (problem,) = info.value.problems
    assert problem.file == str(rules) and "at most 100" in problem.reason
    assert len(load_ruleset(rules).rules) == 3


def test_the_default_pack_is_within_every_limit() -> None:
    """The limits leave room for real sets: the default pack nests far less than them."""
    ruleset = load_ruleset(ROOT / "rules")
    assert len(ruleset.rules) < MAX_RULES and MAX_EXPR_DEPTH >= 16 and MAX_YAML_DEPTH >= 8


# --- arithmetic that overflows at evaluation --------------------------------------------------
OVERFLOW_RULES = {
    "scaled": "event.amount * 1e300 > 5",
    "right": "event.amount < 2 * user.sum_1h",
    "sum": "event.amount + user.sum_1h > 1",
    "ratio": "event.amount / user.sum_1h < 1",
}


def overflow_set(tmp_path: Path) -> Path:
    body = "".join(rule_text(when, rid) for rid, when in OVERFLOW_RULES.items())
    return make_set(tmp_path, {"hostile.yaml": "rules:\n" + body})


@pytest.mark.parametrize("features, fired", [
    ({"event.amount": 1e10, "user.sum_1h": 1.0}, ["sum"]),  # 1e10 * 1e300 overflows: `scaled` is false
    ({"event.amount": 1e-10, "user.sum_1h": 1.0}, ["scaled", "right", "sum", "ratio"]),
    ({"event.amount": 1.0, "user.sum_1h": 1e308}, ["scaled", "sum", "ratio"]),  # 2 * 1e308 overflows
    ({"event.amount": 1e308, "user.sum_1h": 1e308}, []),  # the sum overflows; 1e308 * 1e300 too
    ({"event.amount": 1e308, "user.sum_1h": 1e-300}, ["sum"]),  # the product and the quotient overflow
    ({"event.amount": 10**400, "user.sum_1h": 1.0}, []),  # no double holds it: missing
])
def test_overflow_at_evaluation_is_false_in_every_evaluator(tmp_path: Path, features: dict, fired: list) -> None:
    """durable_rules, the plain-Python reference and the vectorized evaluator agree: an
    arithmetic result that is not a finite number is missing, so its comparison is false."""
    rules = overflow_set(tmp_path)
    live = LiveRules(rules)
    decision = live.evaluate(features)
    got = [rid for rid in decision.fired_ids if rid in OVERFLOW_RULES]
    assert got == fired
    reference = [r.id for r in live.current.rules if compile_predicate(r.expr, live.current.schema.dtypes)(features)]
    assert [rid for rid in reference if rid in OVERFLOW_RULES] == fired
    vector = VectorizedRules.from_ruleset(live.current).evaluate_records([features])
    assert [rid for rid in vector.fired_ids(0) if rid in OVERFLOW_RULES] == fired


# --- a refused set is remembered by its hash --------------------------------------------------
def failing_cases_set(tmp_path: Path, rules_count: int) -> Path:
    """A valid set of ``rules_count`` rules whose one case fails (the issue's 3,000-rule set, smaller)."""
    body = "".join(rule_text(f"event.amount > {i} and card.count_1h >= {i % 50}", f"bulk.r{i}")
                   for i in range(rules_count))
    return make_set(tmp_path, {"bulk.yaml": "rules:\n" + body, "bulk_test.yaml":
                               "cases:\n  - name: never fires\n    features: {event.amount: 1}\n"
                               f"    expect: {{fires: [bulk.r{rules_count - 1}]}}\n"})


def test_a_refused_set_is_not_built_again_until_its_files_change(tmp_path: Path) -> None:
    rules = make_set(tmp_path, {})
    live = LiveRules(rules)
    version, builds = live.version, live.builds
    bad = failing_cases_set(tmp_path, 300)
    started = time.perf_counter()
    first = live.reload()
    build_s = time.perf_counter() - started
    assert not first.ok and first.failed_cases and live.builds == builds + 1
    started = time.perf_counter()
    again = live.reload()
    again_s = time.perf_counter() - started
    assert again.refused_earlier and not again.ok and live.builds == builds + 1
    assert again.failed_cases == first.failed_cases and again.problems == first.problems
    assert again.files_hash == first.files_hash and again.message.startswith("refused earlier")
    assert again_s < build_s / 5, (again_s, build_s)
    assert live.refused_earlier() and live.version == version

    test_file = bad / "bulk_test.yaml"
    test_file.write_text(test_file.read_text(encoding="utf-8").replace("fires:", "not_fires:"), encoding="utf-8")
    fixed = live.reload()  # a case file changed: a new hash, built again, and now it passes
    assert fixed.ok and fixed.changed and live.builds == builds + 2 and not live.refused_earlier()


def test_the_watcher_does_not_rebuild_a_refused_set_whose_files_are_touched(tmp_path: Path) -> None:
    rules = make_set(tmp_path, {})
    live = LiveRules(rules)
    (rules / "hostile.yaml").write_text("rules:\n" + rule_text("event.amount > 1e400"), encoding="utf-8")
    assert not live.reload().ok and live.builds == 2
    live.watch(interval_s=0.05)
    try:
        for _ in range(3):
            mtime = (rules / "hostile.yaml").stat().st_mtime_ns + 10**9
            os.utime(rules / "hostile.yaml", ns=(mtime, mtime))  # a change of mtime, not of content
            seen = live.last_result
            deadline = time.monotonic() + 10
            while live.last_result is seen and time.monotonic() < deadline:
                time.sleep(0.02)
            assert live.last_result is not seen and live.last_result is not None
            assert live.last_result.refused_earlier and live.builds == 2
        (rules / "hostile.yaml").write_text("rules:\n" + rule_text("event.amount > 1e300"), encoding="utf-8")
        deadline = time.monotonic() + 10
        while live.builds == 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.builds == 3
    finally:
        live.stop_watching()


def test_malformed_cases_are_problems_of_their_file(tmp_path: Path) -> None:
    rules = make_set(tmp_path, {})
    live = LiveRules(rules)
    (rules / "good_test.yaml").write_text(
        "cases:\n  - name: a list of features\n    features: [1, 2]\n    expect: {decision: allow}\n"
        "  - name: fires is a number\n    expect: {fires: 5}\n"
        "  - name: fires holds a mapping\n    expect: {fires: [{a: 1}]}\n", encoding="utf-8")
    result = live.reload()
    assert not result.ok and [p.line for p in result.problems] == [2, 5, 7]
    assert all(p.file == "rules/good_test.yaml" for p in result.problems)
    assert "must be mappings" in result.problems[0].reason and "list of rule ids" in result.problems[1].reason


SHAPES = st.recursive(st.sampled_from([f'{{"t{i}": 1}}' for i in range(12)]), lambda inner: st.tuples(
    st.sampled_from(["and", "or"]), st.lists(inner, min_size=1, max_size=4).map(tuple)), max_leaves=10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(SHAPES, st.sets(st.sampled_from([f"f{i}" for i in range(300)]), max_size=6)), max_size=40),
       st.sampled_from([4, 8, 48]))
def test_packing_a_large_set_gives_each_shard_the_peak_of_its_own_rules(rules: list, budget: int) -> None:
    """`pack` tries each rule in a shard's network and takes it out again when over
    budget (so a 3,000-rule set packs in seconds): each shard's peak is still what the
    network built from its own rules alone gives, within budget unless a lone rule."""
    shards = pack(rules, budget)
    assert sorted(i for indices, _ in shards for i in indices) == list(range(len(rules)))
    for indices, peak in shards:
        assert peak == alpha_stack_peak([rules[i][0] for i in indices])
        assert peak <= budget or len(indices) == 1


def test_a_set_over_the_size_limit_is_refused_unread_and_remembered(tmp_path: Path) -> None:
    rules = make_set(tmp_path, {})
    live = LiveRules(rules, limits=Limits(set_bytes=4096))
    (rules / "big.yaml").write_text("rules:\n" + GOOD_RULE.replace("good.", "big.") + "#" * 5000 + "\n",
                                    encoding="utf-8")
    first, again = live.reload(), live.reload()
    assert not first.ok and "at most 4,096" in first.problems[0].reason and live.builds == 1
    assert again.refused_earlier and again.problems == first.problems and live.builds == 1


# --- property tests over the grammar ----------------------------------------------------------
SCHEMA = Schema.from_catalog(read_lists(ROOT / "rules")[0])
NUMBERS = ["event.amount", "user.sum_1h", "card.count_1h", "merchant.volume_ratio_today"]
TOKENS = [*NUMBERS, "card.type", "event.is_night", "lists.blocked_cards", "card.fingerprint", "event.channel",
          "1", "0", "-1", "2.5", "1e308", "1e400", "1e-320", "9" * 30, "nan", "inf", "'credit'", '"pos"', "true",
          "false", "missing", "+", "-", "*", "/", "**", "//", "%", "<", "<=", ">", ">=", "==", "!=", "and", "or",
          "not", "in", "is", "(", ")", "[", "]", ",", ".", "__import__", "lambda", ":", "x", "if", "else", "@", "~"]
EXTREME = st.one_of(
    st.sampled_from(["0", "1", "-1", "1e308", "-1e308", "1e400", "1e-320", "4.9e-324", str(2**53), str(2**53 + 1),
                     "9" * 40, "0.1"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)
VALUES = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.integers(-(10**20), 10**20),
                   st.sampled_from([1e308, -1e308, 5e-324, 10**400, float("nan"), float("inf"), 2**53 + 1]),
                   st.floats())


def values_text() -> st.SearchStrategy[str]:
    leaf = st.one_of(st.sampled_from(NUMBERS), EXTREME)
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from("+-*/"), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda v: f"-{v}")), max_leaves=6)


def expressions() -> st.SearchStrategy[str]:
    atom = st.one_of(
        st.tuples(values_text(), st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), values_text())
        .map(" ".join),
        st.tuples(st.sampled_from(NUMBERS), st.lists(EXTREME, min_size=1, max_size=4))
        .map(lambda t: f"{t[0]} in [{', '.join(t[1])}]"),
        st.sampled_from(NUMBERS).map(lambda n: f"{n} is missing"),
        st.just("event.is_night"), st.just("card.fingerprint in lists.blocked_cards"),
    )
    return st.recursive(atom, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or "]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda e: f"not {e}")), max_leaves=8)


def check_and_run(when: str, features_list: list[dict]) -> None:
    """Check one `when`; if it is accepted, compile it with durable_rules and evaluate:
    the only way out besides a result is a `RuleSetError` / problem list."""
    rule, problems = build_rule({"id": "prop.r", "description": "p", "when": when, "then": "deny", "score": 1},
                                "prop.yaml", SCHEMA)
    if rule is None:
        assert problems and all(p.file == "prop.yaml" and p.rule_id == "prop.r" for p in problems)
        return
    try:
        ruleset = compile_ruleset([rule], Policy(), SCHEMA, content_hash="0" * 64)
    except RuleSetError as exc:
        assert exc.problems and all(p.rule_id == "prop.r" for p in exc.problems)
        return
    try:
        predicate = compile_predicate(rule.expr, SCHEMA.dtypes)
        for features in features_list:
            assert ("prop.r" in ruleset.evaluate(features).fired_ids) == predicate(features)
    finally:
        ruleset.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=40),
       st.lists(st.fixed_dictionaries({n: VALUES for n in NUMBERS}), max_size=3))
def test_no_token_soup_makes_the_engine_raise(tokens: list[str], features_list: list[dict]) -> None:
    check_and_run(" ".join(tokens), features_list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.lists(st.fixed_dictionaries({n: VALUES for n in NUMBERS}), min_size=1, max_size=3))
def test_no_well_formed_tree_with_extreme_constants_makes_the_engine_raise(when: str,
                                                                           features_list: list[dict]) -> None:
    """Random trees of the grammar, with constants at and past a double's range and
    features as extreme: refused at load, or evaluated by durable_rules exactly as the
    plain-Python reference evaluates them."""
    check_and_run(when, features_list)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["not ", "- ", "+ ", "(", "not (", "-("]), max_size=300),
       st.sampled_from(["event.is_night", "event.amount > 1", "1 < event.amount", "event.amount",
                        "event.amount * 2 > user.sum_1h", "1e308"]))
def test_no_nesting_makes_the_engine_raise(prefix: list[str], core: str) -> None:
    """Prefix operators and brackets nested up to 300 deep around a test: refused past
    the limits (on tokens, before Python's parser recurses), checked below them."""
    text = "".join(prefix) + core + ")" * "".join(prefix).count("(")
    check_and_run(text, [{"event.amount": 5, "user.sum_1h": 1e308}])


YAML_PIECES = ["rules:", "\n", "  ", "- ", "id: ", "when: ", "then: ", "score: ", "description: ", "tags: ", "mode: ",
               "x.r", "deny", "shadow", "10", "1e400", ".nan", ".inf", "-1", "event.amount > 1", "[", "]", "{", "}",
               ", ", ": ", "&a ", "*a", "!!python/object:os.system ", "? ", "'", '"', "|", ">", "#", "~", "null",
               "true", "2**", "rules: [", "- id: y\n  when: event.is_night\n  then: deny\n  score: 1\n  description: d",
               "severity: ", "thresholds: ", "default: ", "grade: ", "channel: ", "lanes: ", "review", "allow",
               "unless_tags: ", "decision: ", "lists: ", "kind: ", "card", "cases: ", "name: ", "features: ",
               "expect: ", "fires: ", "event: ", "lane: ", "A", "pos"]


@pytest.mark.parametrize("target", ["soup.yaml", "policy.yaml", "lists/lists.yaml", "soup_test.yaml"])
def test_no_file_of_a_set_makes_reload_raise(tmp_path: Path, target: str) -> None:
    """Random YAML soups as a rule, policy, lists or case file: the reload answers
    (refused with problems that each say what is wrong, never the loader's last-resort
    refusal, or swapped), whatever the file holds."""
    rules = make_set(tmp_path, {})

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(YAML_PIECES), max_size=40))
    def reload_soup(pieces: list[str]) -> None:
        (rules / target).write_text("".join(pieces), encoding="utf-8")
        live = LiveRules(rules, load=False)
        result = live.reload()
        assert result.ok or result.problems or result.failed_cases
        last_resort = ("could not be", "could not run", "could not compile")
        assert not any(w in p.reason for p in result.problems for w in last_resort), result.problems
        if result.ok:
            live.current.close()

    reload_soup()


def test_a_set_refused_while_its_files_changed_under_the_build_is_not_remembered(tmp_path: Path) -> None:
    """A reload reads the files' hash, then builds: an edit landing in between (an editor
    saving while the watcher or an API call reloads) must not pin the refusal on the hash
    of files the build never judged. Here the service's check stands for the build and
    the edit lands inside it; once the files are back as they were, they are built again."""
    rules = make_set(tmp_path, {})
    good = (rules / "good.yaml").read_text(encoding="utf-8")
    calls: list[int] = []

    def check(_candidate) -> list:
        calls.append(1)
        if len(calls) == 2:  # the reload under test (the first call was the initial load)
            (rules / "good.yaml").write_text(good + "# being edited\n", encoding="utf-8")
            return [Problem(file="good.yaml", line=None, rule_id=None, reason="refused while being edited")]
        return []

    live = LiveRules(rules, check=check)
    (rules / "good.yaml").write_text(good + "# v2\n", encoding="utf-8")
    assert not live.reload().ok
    (rules / "good.yaml").write_text(good + "# v2\n", encoding="utf-8")  # the edit ends where it began
    again = live.reload()
    assert again.ok and not again.refused_earlier, again.to_dict()
