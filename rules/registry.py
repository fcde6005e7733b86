"""Load rules from the ``convdoctor.rules`` entry-point group (built-ins are listed there too) and run them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from convdoctor.analyzer.conv.layers import ConvAnalysis
from convdoctor.rules.base import Finding, Rule, missing_requirements

ENTRY_POINT_GROUP = "convdoctor.rules"
RULE_ID = re.compile(r"^CD[0-9]{3}$")
BUILT_IN = "convdoctor"  # the distribution of the built-in rules


@dataclass
class RuleSet:
    """The rules that loaded, and one line for each plugin that did not."""

    rules: list[Rule]
    problems: list[str] = field(default_factory=list)


@dataclass
class RuleResults:
    """What running the rules gave: findings, the rules skipped with their reasons, one line per rule that raised."""

    findings: list[Finding]
    skipped: dict[str, str]  # rule id -> reason
    problems: list[str] = field(default_factory=list)


def _origin(point: EntryPoint) -> str:
    """Where a rule comes from: its entry point and distribution."""
    return f"{point.value} (from {point.dist.name if point.dist else 'unknown distribution'})"


def load_rules() -> RuleSet:
    """Every rule registered under the entry-point group; a broken plugin is reported and skipped."""
    rules: list[Rule] = []
    problems: list[str] = []
    seen: set[str] = set()
    # Built-ins first, so that a plugin reusing a built-in id is the one rejected.
    points = sorted(entry_points(group=ENTRY_POINT_GROUP),
                    key=lambda p: (p.dist is None or p.dist.name != BUILT_IN, p.name))
    for point in points:
        origin = _origin(point)
        try:
            loaded = point.load()
            rule = loaded() if isinstance(loaded, type) else loaded
        except Exception as exc:  # a third-party plugin may fail in any way; it must not take the run down
            problems.append(f"rule plugin {origin} failed to load: {type(exc).__name__}: {exc}")
            continue
        rule_id = getattr(rule, "id", None)
        if not isinstance(rule, Rule) or not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
            problems.append(f"rule plugin {origin} is not a valid rule (needs an id like CD123 and check())")
        elif rule_id in seen:
            problems.append(f"rule plugin {origin} reuses the id {rule_id}; it was skipped")
        else:
            seen.add(rule_id)
            rules.append(rule)
    return RuleSet(rules=sorted(rules, key=lambda r: r.id), problems=problems)


def run_rules(rules: list[Rule], analysis: ConvAnalysis) -> RuleResults:
    """Run each rule whose requirements the analysis meets; name the reason for each one skipped.

    A rule that raises, in ``check()`` or while its findings are read, gives none: it is named in one line of
    ``problems`` and the other rules run on.
    """
    findings: list[Finding] = []
    skipped: dict[str, str] = {}
    problems: list[str] = []
    for rule in rules:
        missing = missing_requirements(rule, analysis)
        if missing:
            skipped[rule.id] = "; ".join(missing)
            continue
        try:
            findings.extend(list(rule.check(analysis)))
        except Exception as exc:  # a third-party rule may fail in any way; it must not take the run down
            problems.append(_raised(rule, exc))
    return RuleResults(findings=findings, skipped=skipped, problems=problems)


def _raised(rule: Rule, exc: Exception) -> str:
    """One line for a rule whose check raised: the rule, where it comes from, the exception."""
    rule_type = type(rule)
    point = next((p for p in entry_points(group=ENTRY_POINT_GROUP)
                  if p.module == rule_type.__module__ and p.attr == rule_type.__qualname__), None)
    origin = _origin(point) if point else f"({rule_type.__module__})"
    built_in = point is not None and point.dist is not None and point.dist.name == BUILT_IN
    message = " ".join(str(exc).split())  # one line, whatever the exception's text
    blame = " (a bug in convdoctor: please report it)" if built_in else ""
    return f"rule {rule.id} {origin} raised {type(exc).__name__}: {message}; its findings were left out{blame}"


def unmatched_entries(rules: list[Rule], entries: tuple[str, ...]) -> list[str]:
    """The ``--select``/``--ignore`` entries that name no rule: a typo would otherwise select nothing, silently."""
    return [e for e in entries if not any(r.id.startswith(e.upper()) or r.name == e.lower() for r in rules)]


def select_rules(rules: list[Rule], select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> list[Rule]:
    """Rules whose id or name matches a ``select`` entry (all when none) and no ``ignore`` entry.

    An entry is a rule name or an id prefix, as in ruff: ``CD1`` matches CD101…CD199. A rule marked ``opt_in``
    (slow to measure, like compiling the model) runs only when selected by its full id or name.
    """

    def matches(rule: Rule, entries: tuple[str, ...]) -> bool:
        return any(rule.id.startswith(e.upper()) or rule.name == e.lower() for e in entries)

    def named(rule: Rule) -> bool:
        return any(e.upper() == rule.id or e.lower() == rule.name for e in select)

    return [r for r in rules if not matches(r, ignore)
            and (named(r) if getattr(r, "opt_in", False) else not select or matches(r, select))]
