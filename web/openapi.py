"""The OpenAPI 3 document served at /api/v1/openapi.json (tests check it covers every route)."""

from __future__ import annotations

from typing import Any

from compliance.violations import KINDS, STATUSES, TRANSITIONS
from web.violation_queries import SORTS


def _q(name: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_PAGE = [
    _q("page", "Page number, from 1.", {"type": "integer", "minimum": 1, "default": 1}),
    _q(
        "per_page",
        "Items per page (web.page_size by default, at most web.api_max_per_page).",
        {"type": "integer", "minimum": 1},
    ),
]
_CRS = _q(
    "crs",
    "Coordinates of the answer: wgs84, gcj02 or bd09 (default: web.tile_crs).",
    {"type": "string", "enum": ["wgs84", "gcj02", "bd09"]},
)
_KINDS = KINDS
_STATUSES = STATUSES
_SORTS = tuple(SORTS)
_VIOLATION = {"name": "violation_id", "in": "path", "required": True, "schema": {"type": "integer"}}
# The violation list's filters (the list, its exports and the ZIP of evidence packs).
_VIOLATION_FILTERS = [
    _q("from", "Violations that started at or after: epoch ms, ISO-8601, or local time."),
    _q("to", "Violations that started before (same formats)."),
    _q("kind", "Violation kind.", {"type": "string", "enum": list(_KINDS)}),
    _q("status", "Review status.", {"type": "string", "enum": list(_STATUSES)}),
    _q(
        "severity",
        "notice, minor or serious.",
        {"type": "string", "enum": ["notice", "minor", "serious"]},
    ),
    _q("company", "Part of the company name, or its credit code."),
    _q("company_id", "Only this company.", {"type": "integer"}),
    _q("plate", "Part of the plate."),
    _q(
        "district",
        "District (行政区) where the violation happened: its 6-digit code or its name.",
    ),
    _q("zone", "Zone code."),
]
_TRUCK = {"name": "truck_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ERR = {
    "description": "Bad parameter; `error` says which",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_AUTH = {"description": "Not logged in and no valid Bearer token"}
_FORBID = {"description": "The user's role may not use this endpoint"}


def _json(schema: dict) -> dict:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _op(summary: str, params: list, schema: dict, *, not_found: bool = False) -> dict:
    responses = {"200": _json(schema), "400": _ERR, "401": _AUTH, "403": _FORBID}
    if not_found:
        responses["404"] = {"description": "Not found"}
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _page_of(ref: str) -> dict:
    return {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": ref}},
            "page": {"type": "integer"},
            "per_page": {"type": "integer"},
            "total": {"type": "integer"},
            "pages": {"type": "integer"},
            "next": {"type": "string", "nullable": True},
        },
    }


PATHS: dict[str, Any] = {
    "/api/v1/trucks/live": _op(
        "Live map: every active truck's latest state, or only the trucks changed since a cursor",
        [
            _q("since", "Cursor from the previous response (epoch microseconds); omit for all."),
            _CRS,
        ],
        {"$ref": "#/components/schemas/Live"},
    ),
    "/api/v1/trucks": _op(
        "Registered trucks with their last report",
        [
            _q("q", "Part of the plate."),
            _q("company_id", "Only this company.", {"type": "integer"}),
            _q(
                "sort",
                "plate, id or last_report.",
                {"type": "string", "enum": ["plate", "id", "last_report"]},
            ),
            *_PAGE,
        ],
        _page_of("#/components/schemas/TruckRow"),
    ),
    "/api/v1/trucks/{truck_id}": _op(
        "One truck and its latest state",
        [_TRUCK],
        {"$ref": "#/components/schemas/Truck"},
        not_found=True,
    ),
    "/api/v1/trucks/{truck_id}/track": _op(
        "A truck's positions in a time range (oldest first)",
        [
            _TRUCK,
            _q(
                "from",
                "Start: epoch ms, ISO-8601 with offset, or local city time (default: to - 1 h).",
            ),
            _q(
                "to",
                "End (exclusive), same formats (default: now). At most web.track_max_hours after from.",
            ),
            _CRS,
        ],
        {"$ref": "#/components/schemas/Track"},
        not_found=True,
    ),
    "/api/v1/companies": _op(
        "Transport companies",
        [_q("q", "Part of the name, or a credit code."), *_PAGE],
        _page_of("#/components/schemas/Company"),
    ),
    "/api/v1/zones": _op(
        "Active zones (sites, disposal sites, routes, restricted and speed zones) as GeoJSON",
        [
            _q(
                "kind",
                "Only this kind.",
                {"type": "string", "enum": ["site", "disposal", "route", "restricted", "speed"]},
            ),
            _q("district", "Only this district (行政区)."),
            _CRS,
            *_PAGE,
        ],
        {
            "type": "object",
            "description": "GeoJSON FeatureCollection plus page, per_page, total, pages, next, crs",
        },
    ),
    "/api/v1/basemap": _op(
        "The offline base layer (streets, water, green areas) in a viewport, for a zoom",
        [
            _q("bbox", "west,south,east,north in degrees (in crs).", required=True),
            _q(
                "zoom",
                "Map zoom 0-22 (default 12): the classes drawn and the simplification.",
                {"type": "integer"},
            ),
            _CRS,
        ],
        {
            "type": "object",
            "description": "GeoJSON FeatureCollection (properties class, name) plus zoom, "
            "truncated (more than web.basemap_max_features), crs",
        },
    ),
    "/api/v1/districts": _op(
        "Active districts (行政区) as GeoJSON: properties code (行政区划代码) and name",
        [_CRS],
        {
            "type": "object",
            "description": "GeoJSON FeatureCollection (not paginated) plus crs",
        },
    ),
    "/api/v1/violations": _op(
        "Violations, filtered and paginated, with the counts by kind for the whole filter "
        "(what the city's 数字城管 platform pulls)",
        [
            *_VIOLATION_FILTERS,
            _q("sort", "Sort column.", {"type": "string", "enum": list(_SORTS)}),
            _q("dir", "asc or desc (default desc).", {"type": "string", "enum": ["asc", "desc"]}),
            *_PAGE,
        ],
        {
            "allOf": [
                _page_of("#/components/schemas/ViolationRow"),
                {
                    "type": "object",
                    "properties": {
                        "counts_by_kind": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        }
                    },
                },
            ]
        },
    ),
    "/api/v1/violations/{violation_id}": _op(
        "One violation with its evidence fixes (the frozen record once final, until then the "
        "positions table), evidence_status, rule parameters and events",
        [_VIOLATION],
        {"$ref": "#/components/schemas/Violation"},
        not_found=True,
    ),
    "/api/v1/violations/{violation_id}/evidence": _op(
        "The violation's evidence record in force (enforcement, supervisors, credit officers, "
        "administrators; audited): its canonical content as JSON, the exact text its SHA-256 "
        "is over (content_text), version, final, captured_at. 404 until captured.",
        [_VIOLATION],
        {"$ref": "#/components/schemas/Evidence"},
        not_found=True,
    ),
    "/api/v1/violations/{violation_id}/evidence.pdf": {
        "get": {
            "summary": "The evidence pack (PDF, Chinese; audited). 404 until captured.",
            "parameters": [_VIOLATION],
            "responses": {
                "200": {"description": "PDF", "content": {"application/pdf": {}}},
                "401": _AUTH,
                "403": _FORBID,
                "404": {"description": "No such violation, or no evidence yet"},
            },
        }
    },
    "/api/v1/violations/evidence.zip": {
        "get": {
            "summary": "A ZIP of evidence packs (one PDF per violation) for the filtered list, "
            "at most evidence.zip_max violations (400 past it; audited)",
            "parameters": _VIOLATION_FILTERS,
            "responses": {
                "200": {"description": "ZIP", "content": {"application/zip": {}}},
                "400": _ERR,
                "401": _AUTH,
                "403": _FORBID,
            },
        }
    },
    "/api/v1/violations/{violation_id}/actions": {
        "post": {
            "summary": "Review action (enforcement officers and administrators). With a "
            "session cookie, send the CSRF token as X-CSRFToken; a Bearer token needs none.",
            "parameters": [_VIOLATION],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Action"}},
                    "application/x-www-form-urlencoded": {
                        "schema": {"$ref": "#/components/schemas/Action"}
                    },
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "action": {"type": "string"},
                            "status": {"type": "string"},
                        },
                    }
                ),
                "400": _ERR,
                "401": _AUTH,
                "403": _FORBID,
                "404": {"description": "No such violation"},
                "409": {
                    "description": "Not allowed from the current status; `error` says why",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    },
    "/api/v1/black-trucks": _op(
        "Black trucks (黑车): plates seen by cameras and unregistered terminals",
        [
            _q("status", "new or handled.", {"type": "string", "enum": ["new", "handled"]}),
            _q("kind", "plate or device.", {"type": "string", "enum": ["plate", "device"]}),
            _q("q", "Part of the plate or device id."),
            *_PAGE,
        ],
        _page_of("#/components/schemas/BlackTruck"),
    ),
    "/api/v1/overview": _op(
        "Fleet online/dark, today's fixes, quarantine counts by reason", [], {"type": "object"}
    ),
    "/api/v1/me": _op(
        "The authenticated user",
        [],
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "username": {"type": "string"},
                "role": {"type": "string"},
            },
        },
    ),
    "/api/v1/openapi.json": _op("This document", [], {"type": "object"}),
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
    "Live": {
        "type": "object",
        "description": (
            "Column-oriented: trucks.<field>[i] is truck i's value. Apply rows by id; a row with "
            "active=false means remove the truck. Dark = fix_ms older than thresholds.dark_after_s "
            "relative to server_ms (the client re-evaluates it as time passes)."
        ),
        "properties": {
            "full": {"type": "boolean"},
            "cursor": {"type": "string"},
            "server_ms": {"type": "integer"},
            "count": {"type": "integer"},
            "crs": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
            "trucks": {"type": "object", "additionalProperties": {"type": "array"}},
            "companies": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "TruckRow": {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in ("plate", "plate_color", "company", "last_report", "load")
        },
    },
    "Truck": {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in ("plate", "company", "device_id", "fix_time", "load", "lid", "lift")
        },
    },
    "Track": {
        "type": "object",
        "properties": {
            "truck_id": {"type": "integer"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "count": {"type": "integer"},
            "truncated": {"type": "boolean"},
            "crs": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
            "points": {"type": "object", "additionalProperties": {"type": "array"}},
        },
    },
    "ViolationRow": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": "string", "format": "date-time", "nullable": True},
            "plate": {"type": "string"},
            "company": {"type": "string", "nullable": True},
            "kind": {"type": "string", "enum": list(KINDS)},
            "severity": {"type": "string", "enum": ["notice", "minor", "serious"]},
            "status": {"type": "string", "enum": list(STATUSES)},
            "zone_code": {"type": "string", "nullable": True},
            "district": {"type": "string", "nullable": True},
            "worst_value": {"type": "number", "nullable": True},
            "worst_unit": {"type": "string"},
            "points": {"type": "integer"},
            "permit_no": {"type": "string", "nullable": True},
            "decision_no": {"type": "string", "nullable": True},
        },
    },
    "Violation": {
        "type": "object",
        "description": "Every column of the violation, plus plate, company, credit_code and "
        "events. evidence: fixes {t, lat, lon, speed, heading, lid, lift, load, acc, alarms, "
        "device, in_episode} (WGS-84); evidence_status: {final, final_due_at, captured_at, "
        "sha256, version, pdf, json}; rule_params: the rule and thresholds used.",
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string"},
            "stream": {"type": "string"},
            "status": {"type": "string"},
            "evidence": {"type": "array", "items": {"type": "object"}},
            "evidence_status": {"type": "object"},
            "rule_params": {"type": "object"},
            "legal_basis": {"type": "string"},
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        k: {"type": "string"} for k in ("at", "actor", "action", "note")
                    },
                },
            },
        },
    },
    "Evidence": {
        "type": "object",
        "description": "docs/evidence.md. evidence: facts, fixes, zones and permits (the "
        "versions in force at the violation), sightings, terminals, rule (settings table and "
        "thresholds), measured; times UTC ISO 8601. sha256 = SHA-256 of content_text (UTF-8).",
        "properties": {
            "violation_id": {"type": "integer"},
            "record_id": {"type": "integer"},
            "version": {"type": "integer"},
            "final": {"type": "boolean"},
            "captured_at": {"type": "string", "format": "date-time"},
            "sha256": {"type": "string"},
            "content_text": {"type": "string"},
            "evidence": {"type": "object"},
        },
    },
    "Action": {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "enum": list(TRANSITIONS)},
            "note": {"type": "string", "description": "Required to dismiss (the reason)."},
            "decision_no": {
                "type": "string",
                "description": (
                    "行政处罚决定书文号; required to open a case: open_case makes a "
                    "one-violation case decided with it (docs/cases.md); close closes the "
                    "violation's case; dismiss is refused while the violation is in a case."
                ),
            },
        },
    },
    "BlackTruck": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["plate", "device"]},
            "key": {"type": "string"},
            "status": {"type": "string", "enum": ["new", "handled"]},
            "first_seen": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "sightings": {"type": "integer"},
            "sites": {"type": "array", "items": {"type": "string"}},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Company": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "credit_code": {"type": "string"},
            "credit_code_valid": {"type": "boolean"},
            "active": {"type": "boolean"},
        },
    },
}


def document(app=None) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "MuckWatch API",
            "version": "1",
            "description": "API of the MuckWatch dashboard. Authenticate with a "
            "session cookie or `Authorization: Bearer <token>` "
            "(`muck user token USERNAME`).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }
