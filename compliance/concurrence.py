"""一事不二罚 — one act, one charge.

Two violations of one truck whose episodes overlap in time may be one piece of conduct seen
by two rules. Where the policy (`POLICY`, one entry per unordered pair of kinds, documented
in docs/compliance.md) says they are the same conduct, the lighter is linked to the heavier
(`violations.absorbed_by`): both stay on record with their evidence, the heavier legal basis
is the one charged. Heavier means more credit points (`rules.<kind>.points`); between equal
points, the kind named first in the pair.

Two pairs are kept apart by the rules themselves instead of by linking, because one of the
two charges would simply be wrong: a truck without any valid permit unloading at a real
disposal site is `no_valid_permit` only (`unapproved_disposal` needs a permit that does not
approve the site: compliance/rules/dumping.py), and illegal dumping (outside every site) and
unapproved disposal (inside a disposal site) cannot both be true of one unloading.

The linking runs with the rules, on the trucks of each batch and replay
(`ComplianceEngine`), so a violation is linked in the transaction that stores it.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from compliance.pipeline import PIPELINE

Relation = Literal["same_conduct", "exclusive", "separate"]

# (first, second): (relation, why). For "same_conduct" the first is heavier on equal points.
POLICY: dict[tuple[str, str], tuple[Relation, str]] = {
    ("restricted_zone", "route_deviation"): (
        "same_conduct",
        "leaving the approved route into a restricted zone is one drive where it may not go",
    ),
    ("restricted_zone", "restricted_hours"): (
        "same_conduct",
        "driving through a zone banned at an hour the permit does not allow is one drive at a "
        "forbidden time",
    ),
    ("route_deviation", "restricted_hours"): (
        "same_conduct",
        "one provision (按照规定的路线、时间运行) covers both; one drive, one charge",
    ),
    ("no_valid_permit", "unapproved_disposal"): (
        "exclusive",
        "without a valid permit no disposal site is approved or unapproved: the unloading is "
        "part of the unpermitted transport (the rule needs a permit)",
    ),
    ("illegal_dumping", "unapproved_disposal"): (
        "exclusive",
        "outside every site versus inside a disposal site: never both of one unloading",
    ),
}
_SEPARATE_WHY = {
    "speeding": "speed is a traffic offence of its own, whatever else the truck does",
    "unsealed_transport": "an open load is its own conduct (spillage risk), wherever it drives",
    "going_dark": "keeping the terminal online is a duty of its own",
    "illegal_dumping": "dumping is an act of its own, apart from how the load was carried",
    "no_valid_permit": "transport without a permit is its own conduct; what the truck does on "
    "the way (speeding, a banned zone, dumping) is another act",
}


def relation(a: str, b: str) -> tuple[Relation, str]:
    """The policy for a pair of kinds, in either order."""
    for key in ((a, b), (b, a)):
        if key in POLICY:
            return POLICY[key]
    why = _SEPARATE_WHY.get(a) or _SEPARATE_WHY.get(b) or "different conduct"
    return "separate", why


def every_pair() -> list[tuple[str, str]]:
    kinds = [rule.kind for rule in PIPELINE]
    return list(itertools.combinations(kinds, 2))


def _points(settings: Any, kind: str) -> int:
    return int(settings["rules"][kind].get("points", 0))


def linked_pairs(settings: Any) -> list[tuple[str, str]]:
    """(lighter, heavier) for every same-conduct pair, by the settings' points."""
    out = []
    for (first, second), (rel, _) in POLICY.items():
        if rel != "same_conduct":
            continue
        p1 = _points(settings, first)
        p2 = _points(settings, second)
        out.append((first, second) if p1 < p2 else (second, first))
    return out


_UNLINK = """
UPDATE violations a SET absorbed_by = NULL, updated_at = now()
FROM violations b
WHERE a.absorbed_by = b.id AND a.truck_id = ANY(%(trucks)s)
  AND (b.status = 'withdrawn' OR a.status = 'withdrawn')
"""
_LINK = """
WITH pairs AS (
    SELECT * FROM unnest(%(lighter)s::text[], %(heavier)s::text[], %(rank)s::int[])
        AS p(lighter, heavier, rank)
), candidates AS (
    SELECT DISTINCT ON (a.id) a.id, b.id AS primary_id
    FROM violations a
    JOIN pairs p ON p.lighter = a.kind
    JOIN violations b ON b.truck_id = a.truck_id AND b.kind = p.heavier
         AND b.status <> 'withdrawn' AND b.absorbed_by IS NULL AND b.id <> a.id
         AND b.started_at <= COALESCE(a.ended_at, 'infinity')
         AND a.started_at <= COALESCE(b.ended_at, 'infinity')
    WHERE a.truck_id = ANY(%(trucks)s) AND a.absorbed_by IS NULL AND a.status <> 'withdrawn'
    ORDER BY a.id, p.rank DESC, b.started_at, b.id
)
UPDATE violations v SET absorbed_by = c.primary_id, updated_at = now()
FROM candidates c WHERE v.id = c.id
RETURNING v.id, c.primary_id
"""


def link_concurrent(cur, settings: Any, trucks: list[int]) -> list[tuple[int, int]]:
    """Link the trucks' overlapping same-conduct violations, lighter to heavier; returns the
    (violation, charged as) pairs linked now. A link to a violation withdrawn since is undone."""
    if not trucks:
        return []
    pairs = linked_pairs(settings)
    points = {kind: _points(settings, kind) for pair in pairs for kind in pair}
    cur.execute(_UNLINK, {"trucks": trucks})
    cur.execute(
        _LINK,
        {
            "trucks": trucks,
            "lighter": [a for a, _ in pairs],
            "heavier": [b for _, b in pairs],
            "rank": [points[b] for _, b in pairs],
        },
    )
    linked = cur.fetchall()
    for vid, primary in linked:
        cur.execute(
            """INSERT INTO violation_events (violation_id, actor, action, after, note)
               VALUES (%s, 'system', 'linked', %s::jsonb, %s)""",
            (
                vid,
                f'{{"absorbed_by": {int(primary)}}}',
                "一事不二罚: the same conduct as a heavier charge; charged as that one",
            ),
        )
    return linked
