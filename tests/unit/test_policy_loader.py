"""Loading rules: every mistake is reported at file:line:col, all of them at once."""

import textwrap
from pathlib import Path

import pytest

from brokerguard.errors import BrokerGuardError
from brokerguard.operations import ACTIONS, Verdict
from brokerguard.policy import RulesError, load, parse_files
from brokerguard.policy.globs import compile_glob, overlaps
from brokerguard.policy.loader import parse_file

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"

HEAD = """\
resources:
  topics: ["orders.*"]
  groups: ["orders-*"]
rules:
"""


def problems_of(text: str, path: str = "r/orders.yaml") -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_files([(path, textwrap.dedent(text))])
    return [str(problem) for problem in caught.value.problems]


def test_the_shipped_rules_load_without_warnings():
    rules = load(RULES_DIR)
    assert [f.name for f in rules.files] == ["orders.yaml", "payments.yaml", "platform.yaml", "sandbox.yaml"]
    assert rules.warnings == ()
    assert all(rule.targets for _, rule in rules.rules())


def test_a_rule_file_as_data():
    parsed = parse_file("r/orders.yaml", HEAD + """\
  - name: readers
    allow: [consume, describe]
    who: {groups: [analysts], subjects: ["svc-*"], claims: {tier: [gold, 1]}, mechanisms: [mtls]}
    except: {subjects: [mallory]}
    topics: ["orders.eu.*"]
    client: {addresses: ["10.0.0.0/8", "2001:db8::/32"], client_ids: ["app-*"], software: ["librdkafka*"]}
    when: {days: [mon, Friday], hours: "22:00-06:00", timezone: Europe/Berlin}
    reason: analysts read orders
""")
    rule = parsed.rules[0]
    assert (parsed.name, rule.file, rule.name, rule.verdict) == ("orders.yaml", "orders.yaml", "readers", Verdict.ALLOW)
    assert rule.targets == (("topic", frozenset({"consume", "describe"})),)
    assert rule.who.groups.patterns == ("analysts",) and rule.who.mechanisms == frozenset({"mTLS"})
    assert rule.who.claims == (("tier", ("gold", 1)),)
    assert rule.when.days == frozenset({0, 4}) and (rule.when.start_minute, rule.when.end_minute) == (1320, 360)
    assert [str(net) for net in rule.client.addresses] == ["10.0.0.0/8", "2001:db8::/32"]
    assert (rule.line, rule.col) == (5, 5)


def test_star_means_every_action_of_the_rules_kinds():
    parsed = parse_file("r/orders.yaml", HEAD + "  - {name: all, allow: ['*']}\n")
    assert dict(parsed.rules[0].targets) == {"topic": ACTIONS["topic"], "group": ACTIONS["group"]}


def test_actions_split_over_the_kinds_they_exist_for():
    parsed = parse_file("r/orders.yaml", HEAD + "  - {name: rd, allow: [consume, produce, delete_records]}\n")
    assert dict(parsed.rules[0].targets) == {"topic": frozenset({"consume", "produce", "delete_records"}),
                                             "group": frozenset({"consume"})}


@pytest.mark.parametrize(
    "rule, message",
    [
        ("  - {name: a, alow: [consume]}",
         "5:15: unknown key `alow` in a rule (did you mean `allow`?)"),
        ("  - {name: a, allow: [publish]}", "5:23: unknown action `publish`"),
        ("  - {name: a, allow: [transaction]}",
         "5:23: `transaction` is not an action on topics or groups, what this rule applies to; "
         "it acts on transactional ids"),
        ("  - {name: a, allow: [produce], groups: ['orders-*']}",
         "5:23: `produce` is not an action on groups, what this rule applies to; it acts on topics"),
        ("  - {allow: [consume]}", "5:5: this rule has no `name`"),
        ("  - {name: Big, allow: [consume]}", "5:12: rule name `Big` may use only lowercase letters"),
        ("  - {name: a, allow: [consume]}\n  - {name: a, deny: [produce]}",
         "6:12: rule name `a` is already used at line 5"),
        ("  - {name: a}", "5:5: rule `a` needs exactly one of `allow`, `deny`, `require_approval` or `apply`"),
        ("  - {name: a, allow: [consume], deny: [produce]}",
         "5:33: rule `a` has both `allow` and `deny`: give each effect its own rule"),
        ("  - {name: a, allow: ['*', consume]}", "5:22: `*` in `allow` already means every action"),
        ("  - {name: a, allow: consume}", "5:22: `allow` must be a list: write [consume]"),
        ("  - {name: a, allow: []}", "5:22: `allow` is an empty list"),
        ("  - {name: a, allow: [consume], topics: ['^orders$']}", "5:42: `^orders$` contains $ ^, which globs do not have"),
        ("  - {name: a, allow: [consume], topics: ['orders/eu']}",
         "5:42: `orders/eu` can never match a topic: topic names use only letters, digits"),
        ("  - {name: a, allow: [consume], transactional_ids: [x]}",
         "5:33: this rule narrows to transactional_ids, but the file governs none"),
        ("  - {name: a, allow: [consume], cluster: true}", "5:33: this rule narrows to cluster, but the file"),
        ("  - {name: a, allow: [consume], client: {addresses: [10.0.0.0/33]}}",
         "5:54: `10.0.0.0/33` is not an IP address or CIDR network"),
        ("  - {name: a, allow: [consume], client: {addresses: [10.1.0.0/8]}}",
         "5:54: `10.1.0.0/8` has host bits set; did you mean 10.0.0.0/8?"),
        ("  - {name: a, allow: [consume], client: {}}", "5:41: `client` is empty"),
        ("  - {name: a, allow: [consume], when: {hours: '8-18'}}", "5:47: `8-18` is not a time range"),
        ("  - {name: a, allow: [consume], when: {hours: '25:00-26:00'}}", "5:47: `25:00-26:00` is not a time range"),
        ("  - {name: a, allow: [consume], when: {hours: '08:00-08:00'}}", "5:47: `08:00-08:00` is an empty window"),
        ("  - {name: a, allow: [consume], when: {days: [funday]}}", "5:47: `funday` is not a day"),
        ("  - {name: a, allow: [consume], when: {days: [mon], timezone: Europe/Berln}}",
         "5:63: unknown timezone `Europe/Berln` (did you mean `Europe/Berlin`?)"),
        ("  - {name: a, allow: [consume], when: {days: [mon], timezone: /etc/passwd}}",
         "5:63: unknown timezone `/etc/passwd`"),
        ("  - {name: a, allow: [consume], when: {timezone: UTC}}", "5:39: `when` needs `days`, `hours` or both"),
        ("  - {name: a, allow: [consume], who: {}}", "5:38: `who` is empty: leave it out"),
        ("  - {name: a, allow: [consume], except: {}}", "5:41: `except` is empty: it would exempt everyone"),
        ("  - {name: a, allow: [consume], who: {mechanisms: [kerberos]}}", "5:52: unknown mechanism `kerberos`"),
        ("  - {name: a, allow: [consume], who: {claims: {role: {a: 1}}}}",
         "5:54: claim `role` needs a value or a non-empty list of values"),
        ("  - {name: a, allow: [consume], who: {groups: analysts}}", "5:47: `who.groups` must be a list"),
        ("  - {name: a, allow: [consume], reason: ~}", "5:41: `reason` is empty"),
        ("  - {name: a, allow: [consume], name: b}", "5:33: `name` appears twice in a rule (first at line 5)"),
    ],
)
def test_mistakes_are_reported_where_they_are(rule, message):
    found = problems_of(HEAD + rule + "\n")
    assert any(problem.startswith("r/orders.yaml:" + message) for problem in found), found


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "r/orders.yaml:1:1: the file is empty"),
        ("rules: [\n", "r/orders.yaml:2:1: not valid YAML"),
        ("a: b\n---\nc: d\n", "r/orders.yaml:2:1: not valid YAML: but found another document"),
        ("- 1\n", "r/orders.yaml:1:1: a rules file must be a mapping"),
        ("rules: []\n", "r/orders.yaml:1:1: the file has no `resources`"),
        ("resources: {topics: [a]}\n", "r/orders.yaml:1:1: the file has no `rules`"),
        ("resources: {cluster: false}\nrules: []\n", "r/orders.yaml:1:12: `resources` governs nothing"),
        ("resources: {cluster: yes please}\nrules: []\n", "r/orders.yaml:1:22: `cluster` must be true or false"),
        ("resources: {topic: [a]}\nrules: []\n", "r/orders.yaml:1:13: unknown key `topic` in `resources` "
                                                 "(did you mean `topics`?)"),
        ("descripton: x\nresources: {topics: [a]}\nrules: []\n", "r/orders.yaml:1:1: unknown key `descripton`"),
        ("resources: {topics: [a]}\nrules: []\nrules: []\n", "r/orders.yaml:3:1: `rules` appears twice"),
        ("resources: {topics: [a]}\nrules: {}\n", "r/orders.yaml:2:8: `rules` must be a list"),
        ("x: \x07\n", "r/orders.yaml:1:4: not valid YAML: control characters are not allowed"),
    ],
)
def test_file_level_mistakes(text, message):
    found = problems_of(text)
    assert any(problem.startswith(message) for problem in found), found


def test_bytes_that_are_not_utf8_are_located():
    with pytest.raises(RulesError) as caught:
        parse_files([("r/x.yaml", b"resources: {topics: [a]}\nrules: [\xff]\n")])
    assert str(caught.value.problems[0]) == "r/x.yaml:2:9: not UTF-8 text"


def test_every_problem_in_every_file_is_collected():
    with pytest.raises(RulesError) as caught:
        parse_files([
            ("r/a.yaml", HEAD + "  - {name: a, allow: [publish]}\n  - {name: b, deny: [nope]}\n  - {allow: [x]}\n"),
            ("r/b.yaml", "resources: {topics: ['[ab]']}\nrules: []\n"),
        ])
    err = caught.value
    assert isinstance(err, BrokerGuardError)
    assert [(p.file, p.line) for p in err.problems] == [("r/a.yaml", 5), ("r/a.yaml", 6), ("r/a.yaml", 7),
                                                         ("r/a.yaml", 7), ("r/b.yaml", 1)]
    assert str(err).splitlines()[0].startswith("r/a.yaml:5:23: unknown action `publish`")


def test_a_narrowing_that_matches_nothing_governed_is_a_warning_only():
    rules = parse_files([("r/orders.yaml", HEAD + "  - {name: a, allow: [consume], topics: ['billing.*', 'orders.eu']}\n")])
    assert [str(w) for w in rules.warnings] == [
        "r/orders.yaml:5:42: `billing.*` matches none of the topics this file governs (orders.*): "
        "the rule never applies to it"]


def test_directory_problems(tmp_path):
    with pytest.raises(RulesError, match="no such directory"):
        load(tmp_path / "missing")
    (tmp_path / "file.yaml").write_text("x")
    with pytest.raises(RulesError, match="not a directory"):
        load(tmp_path / "file.yaml")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "orders_test.yaml").write_text("tests: []")
    with pytest.raises(RulesError) as caught:
        load(empty)
    assert str(caught.value) == f"{empty}: no rules files (*.yaml, *.yml) in this directory: an empty rule set would deny everything"


def test_only_rules_files_are_read(tmp_path):
    (tmp_path / "b.yml").write_text(HEAD + "  - {name: a, allow: [consume]}\n")
    (tmp_path / "a.yaml").write_text(HEAD + "  - {name: a, allow: [consume]}\n")
    (tmp_path / "a_test.yaml").write_text("not: rules")
    (tmp_path / "b_test.yml").write_text("not: rules")
    (tmp_path / ".hidden.yaml").write_text("not: rules")
    (tmp_path / "notes.txt").write_text("not: rules")
    rules = load(tmp_path)
    assert [f.name for f in rules.files] == ["a.yaml", "b.yml"]
    assert [f.path for f in rules.files] == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yml")]


def test_json_with_tabs_is_accepted():
    rules = parse_files([("r/x.json.yaml", '{\n\t"resources": {"topics": ["a"]},\n\t"rules": []\n}')])
    assert rules.files[0].resources.topics.patterns == ("a",)


def test_names_that_look_like_numbers_are_names():
    rules = parse_files([("r/x.yaml", "resources: {topics: [2024, 1.5], groups: [yes]}\nrules: []\n")])
    assert rules.files[0].resources.topics.patterns == ("2024", "1.5")
    assert rules.files[0].resources.groups.patterns == ("yes",)


@pytest.mark.parametrize(
    "pattern, matching, not_matching",
    [
        ("payments.*", ["payments.", "payments.cards.eu"], ["payments", "xpayments.a"]),
        ("*", ["", "a.b.c"], []),
        ("*.eu", ["cards.eu", ".eu"], ["cards.eu.x"]),
        ("a*b", ["ab", "a.x.b"], ["a", "ba"]),
        ("a?c", ["abc", "a.c"], ["ac", "abbc"]),
        ("a*b*c*d", ["abcd", "aXbXcXd", "abdcd"], ["abdc", "acbd"]),
        ("*a*a*a*a*b", ["aaaab"], ["a" * 5000]),
        ("?", ["x"], ["", "xy"]),
        ("a\nb*", ["a\nbc"], ["ab"]),
    ],
)
def test_globs(pattern, matching, not_matching):
    test = compile_glob(pattern)
    assert all(test(name) for name in matching)
    assert not any(test(name) for name in not_matching)


@pytest.mark.parametrize(
    "first, second, expected",
    [("payments.*", "payments.cards.*", True), ("payments.*", "billing.*", False), ("a?", "ab", True),
     ("a?", "abc", False), ("*x", "y*", True), ("a*", "*b", True), ("abc", "abc", True), ("abc", "abd", False),
     ("*", "", True), ("?", "", False)],
)
def test_glob_overlap(first, second, expected):
    assert overlaps(first, second) is expected and overlaps(second, first) is expected
