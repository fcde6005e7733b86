"""The rule registry: rules load through entry points, each is documented, valid and has its own test file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convdoctor.rules.base import DOC_SECTIONS, Rule, doc_sections
from convdoctor.rules.registry import RULE_ID, load_rules

pytestmark = pytest.mark.analysis  # times nothing: the parallel phase (conftest.py)

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
        sections = doc_sections(rule.doc)
        assert [heading for heading, _ in sections] == list(DOC_SECTIONS), f"{rule.id} doc sections"
        assert all(body for _, body in sections), f"{rule.id} has an empty doc section"
        assert list(TESTS.glob(f"test_{rule.id.lower()}_*.py")), f"{rule.id} has no test file"


def test_select_and_ignore_by_prefix_and_name():
    from convdoctor.rules.registry import select_rules

    rules = load_rules().rules
    default = [r.id for r in rules if r.id.startswith("CD1") and not getattr(r, "opt_in", False)]
    assert [r.id for r in select_rules(rules, select=("CD1",))] == default
    assert "CD101" not in [r.id for r in select_rules(rules, ignore=("channels-last",))]
    assert [r.id for r in select_rules(rules, select=("cd101",))] == ["CD101"]
    assert select_rules(rules, select=("CD9",)) == []


def test_rules_command_lists_and_prints_docs():
    from click.testing import CliRunner

    from convdoctor.cli import main

    listing = CliRunner().invoke(main, ["rules"])
    assert listing.exit_code == 0 and "CD101  channels-last" in listing.stdout
    doc = CliRunner().invoke(main, ["rules", "CD101"])
    assert doc.exit_code == 0 and all(f"## {section}" in doc.stdout for section in DOC_SECTIONS)
    missing = CliRunner().invoke(main, ["rules", "CD999"])
    assert missing.exit_code == 2 and "no rule 'CD999'" in missing.stderr


def test_ignored_rule_does_not_run_in_analyze(tmp_path):
    import json

    from click.testing import CliRunner
    from conftest import SHARED_TRACES

    from convdoctor.cli import main

    def rule_ids(*extra: str) -> list[str]:
        result = CliRunner().invoke(main, ["analyze", str(SHARED_TRACES["resnet50"]), "--out", str(tmp_path),
                                           "--format", "json", *extra])
        assert result.exit_code == 0
        return [f["rule_id"] for f in json.loads(result.stdout)["findings"]]

    assert "CD101" in rule_ids()
    remaining = rule_ids("--ignore", "CD101")
    assert "CD101" not in remaining and remaining  # the other rules still ran


def test_select_takes_comma_lists_and_refuses_entries_that_name_no_rule(tmp_path):
    import json

    from click.testing import CliRunner
    from conftest import SHARED_TRACES

    from convdoctor.cli import main

    trace = str(SHARED_TRACES["resnet50"])
    listed = CliRunner().invoke(main, ["analyze", trace, "--out", str(tmp_path / "a"), "--format", "json",
                                       "--select", "CD101,cudnn-benchmark"])
    assert listed.exit_code == 0, listed.stderr
    assert {f["rule_id"] for f in json.loads(listed.stdout)["findings"]} == {"CD101", "CD104"}
    typo = CliRunner().invoke(main, ["analyze", trace, "--out", str(tmp_path / "b"), "--select", "CD101,CD1O4"])
    assert typo.exit_code == 2 and "no rule matches 'CD1O4'" in typo.stderr
    assert not (tmp_path / "b").exists()  # refused before any work
