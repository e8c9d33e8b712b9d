"""Every rule of the pipeline is configured, labelled and documented, in the style of
Datasette's documentation tests: one test per rule kind, failing with the name of what is
missing (a `[rules.<kind>]` section in core/defaults.toml, a label in Chinese and in English,
a legal-basis key, its rows in docs/compliance.md). No services needed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from compliance.pipeline import PIPELINE
from compliance.rules.base import Rule
from compliance.violations import KINDS

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = tomllib.loads((ROOT / "core" / "defaults.toml").read_text(encoding="utf-8"))
COMPLIANCE_MD = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
ADDING_MD = (ROOT / "docs" / "adding-a-rule.md").read_text(encoding="utf-8")
# "<regulation>.art_<n>[.<clause>]" or "city.<topic>": lower case, dotted, stable.
LEGAL_BASIS_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The rows of the first table under `heading`, by the code word in their first cell."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z0-9_]+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells[1:]
    return rows


RULE_TABLE = table_rows(COMPLIANCE_MD, "## The rules")
LEGAL_TABLE = table_rows(COMPLIANCE_MD, "### Legal-basis keys")


def section_of(defaults: dict, section: str) -> dict | None:
    table: object = defaults
    for key in section.split("."):
        table = table.get(key) if isinstance(table, dict) else None
    return table if isinstance(table, dict) else None


def problems(rule: type[Rule], defaults: dict = DEFAULTS) -> list[str]:
    """What `rule` lacks, in words; empty when it is complete."""
    found = []
    if not rule.kind:
        found.append("no kind")
    if rule.section != f"rules.{rule.kind}":
        found.append(f"section {rule.section!r} is not 'rules.{rule.kind}'")
    if section_of(defaults, rule.section) is None:
        found.append(f"no [{rule.section}] in core/defaults.toml")
    for language in ("zh", "en"):
        if not rule.label.get(language):
            found.append(f"no {language} label")
    if not LEGAL_BASIS_KEY.fullmatch(rule.legal_basis_key):
        found.append(f"legal-basis key {rule.legal_basis_key!r} is not a dotted lower-case key")
    row = RULE_TABLE.get(rule.kind)
    if row is None:
        found.append("no row in the rule table of docs/compliance.md")
    elif rule.label.get("zh") and row[0] != rule.label["zh"]:
        found.append(f"docs/compliance.md calls it {row[0]!r}, the rule {rule.label['zh']!r}")
    legal = LEGAL_TABLE.get(rule.kind)
    if legal is None:
        found.append("no row in the legal-basis keys of docs/compliance.md")
    elif legal[0] != f"`{rule.legal_basis_key}`":
        found.append(f"docs/compliance.md gives its key as {legal[0]}")
    return found


@pytest.mark.parametrize("rule", PIPELINE, ids=lambda rule: rule.kind)
def test_rule_is_configured_labelled_and_documented(rule):
    assert problems(rule) == []


def test_every_rule_table_in_the_defaults_belongs_to_a_rule_of_the_pipeline():
    assert {f"rules.{name}" for name in DEFAULTS["rules"]} == {rule.section for rule in PIPELINE}


def test_the_docs_list_no_rule_the_pipeline_lacks():
    assert set(RULE_TABLE) == set(KINDS)
    assert set(LEGAL_TABLE) == set(KINDS)


def test_kinds_and_labels_come_from_the_pipeline():
    from flask import Flask
    from flask_babel import Babel, force_locale

    from web.violation_queries import KIND_LABELS

    assert KINDS == tuple(rule.kind for rule in PIPELINE)
    assert len(set(KINDS)) == len(KINDS)
    assert list(KIND_LABELS) == list(KINDS)
    # Outside a request the label is the English one; in one, the request's language.
    assert [str(KIND_LABELS[kind]) for kind in KINDS] == [rule.label["en"] for rule in PIPELINE]
    app = Flask(__name__)
    Babel(app)
    for language in ("zh", "en"):
        with app.test_request_context(), force_locale(language):
            shown = [str(KIND_LABELS[kind]) for kind in KINDS]
        assert shown == [rule.label[language] for rule in PIPELINE]


def test_the_checks_name_each_thing_a_new_rule_lacks():
    class Unfinished(Rule):
        kind = "unfinished"
        section = "rules.unfinished"
        label = {"zh": "未完成"}
        legal_basis_key = "Article 9"

    assert problems(Unfinished) == [
        "no [rules.unfinished] in core/defaults.toml",
        "no en label",
        "legal-basis key 'Article 9' is not a dotted lower-case key",
        "no row in the rule table of docs/compliance.md",
        "no row in the legal-basis keys of docs/compliance.md",
    ]
    # Given its table, it lacks only the rest.
    with_table = {"rules": {**DEFAULTS["rules"], "unfinished": {"points": 1}}}
    assert "no [rules.unfinished] in core/defaults.toml" not in problems(Unfinished, with_table)


def test_adding_a_rule_names_the_three_product_files():
    for path in ("compliance/rules/", "compliance/pipeline.py", "core/defaults.toml"):
        assert f"`{path}" in ADDING_MD, path
