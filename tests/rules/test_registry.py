"""The rule registry: rules load through entry points, each is documented, valid and has its own test file."""

from __future__ import annotations

import re
from pathlib import Path

from convdoctor.rules.base import DOC_SECTIONS, Rule
from convdoctor.rules.registry import RULE_ID, load_rules

TESTS = Path(__file__).resolve().parent


def test_built_in_rules_load_through_the_entry_point_group():
    rule_set = load_rules()
    assert rule_set.problems == []
    assert "CD101" in [rule.id for rule in rule_set.rules]


def test_every_rule_is_complete():
    rules = load_rules().rules
    assert len({rule.id for rule in rules}) == len(rules)
    for rule in rules:
        assert isinstance(rule, Rule)
        assert RULE_ID.match(rule.id), rule.id
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule.name), rule.name
        assert rule.summary and "\n" not in rule.summary
        headings = re.findall(r"^## (.+)$", rule.doc, flags=re.MULTILINE)
        assert headings == list(DOC_SECTIONS), f"{rule.id} doc sections: {headings}"
        assert list(TESTS.glob(f"test_{rule.id.lower()}_*.py")), f"{rule.id} has no test file"
