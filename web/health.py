"""`/health`: the only page without log-in, for load balancers and monitoring."""

from __future__ import annotations

from flask import Blueprint, jsonify

from web.db import get_db

bp = Blueprint("health", __name__)


@bp.route("/health")
def health():
    try:
        conn = get_db()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        conn.rollback()
    except Exception as exc:  # the database is the only dependency worth reporting
        return jsonify(status="error", database=type(exc).__name__), 503
    return jsonify(status="ok", database="ok")
