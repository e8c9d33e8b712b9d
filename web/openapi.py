"""The OpenAPI 3 document served at /api/v1/openapi.json (tests check it covers every route)."""

from __future__ import annotations

from typing import Any


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
        responses["404"] = {"description": "No such truck"}
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
            "description": "Read API of the MuckWatch dashboard. Authenticate with a "
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
