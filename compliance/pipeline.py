"""The rules, in the order they run: the one list of them.

Everything else that lists the rule kinds derives from it: the violation kinds
(`compliance.violations.KINDS`), the dashboard's labels (`web.violation_queries.KIND_LABELS`),
the settings tables the engine reads (each rule's `section`; tests/compliance/test_rule_docs.py checks
that core/defaults.toml has exactly those) and the stored carry's layout. Adding a rule:
docs/adding-a-rule.md.
"""

from __future__ import annotations

from compliance.rules.base import Rule
from compliance.rules.dark import GoingDark
from compliance.rules.dumping import IllegalDumping, UnapprovedDisposal
from compliance.rules.permit import NoValidPermit
from compliance.rules.restricted import RestrictedHours, RestrictedZone
from compliance.rules.route import RouteDeviation
from compliance.rules.speeding import Speeding
from compliance.rules.unsealed import UnsealedTransport

PIPELINE: tuple[type[Rule], ...] = (
    RouteDeviation,
    UnsealedTransport,
    IllegalDumping,
    UnapprovedDisposal,
    Speeding,
    RestrictedZone,
    RestrictedHours,
    GoingDark,
    NoValidPermit,
)
