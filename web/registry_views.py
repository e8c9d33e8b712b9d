"""Registry pages for administrators: companies, trucks, terminals, zones.

Validation errors are shown next to the field. Credit codes: a code that is not 18
characters of the GB 32100 alphabet is refused (a typo); a well-formed code whose check
character fails is stored, flagged (credit_code_valid = false) and shown with a warning,
because real registries contain such codes and the record must not be lost.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from compliance.districts import fill_missing_districts
from geofence.io import ZoneImportError, read_zones_file
from geofence.store import set_active as set_zone_active
from geofence.store import upsert_zones
from registry.service import FieldError, get_company, get_terminal, get_truck
from web import registry_store as store
from web.audit import record
from web.auth import require
from web.db import get_db
from web.forms import CompanyForm, ConfirmForm, TerminalForm, TruckForm, ZoneUploadForm
from web.params import bad, city_tz, page_args, settings

bp = Blueprint("registry", __name__, url_prefix="/registry")


@bp.before_request
@require("registry")
def _admin_only():
    return None


def _search(sql_where: str, count_sql: str, select_sql: str, params: dict):
    page = page_args()
    params = {**params, "limit": page.per_page, "offset": page.offset}
    with get_db().cursor() as cur:
        cur.execute(count_sql.format(where=sql_where), params)
        total = cur.fetchone()[0]
        cur.execute(select_sql.format(where=sql_where), params)
        rows = cur.fetchall()
    return rows, total, page


def _save(form, saver, row_id=None):
    """Run a store function in one transaction; a FieldError lands next to its field."""
    conn = get_db()
    try:
        with conn.cursor() as cur:
            result = saver(cur, form, row_id)
        conn.commit()
        return result
    except FieldError as exc:
        conn.rollback()
        getattr(form, exc.field).errors.append(str(exc))
        return None


# ---- companies ---------------------------------------------------------------------------


@bp.route("/companies")
def companies():
    q = (request.args.get("q") or "").strip()
    rows, total, page = _search(
        "WHERE (%(q)s = '' OR name ILIKE '%%' || %(q)s || '%%' OR credit_code ILIKE %(q)s || '%%')",
        "SELECT count(*) FROM companies {where}",
        """SELECT id, name, credit_code, credit_code_valid, legal_representative, phone, active
           FROM companies {where} ORDER BY name, id LIMIT %(limit)s OFFSET %(offset)s""",
        {"q": q},
    )
    return render_template(
        "registry/companies.html", rows=rows, total=total, page=page, q=q, confirm=ConfirmForm()
    )


def _company_saver(cur, form, company_id):
    return store.save_company(cur, form.data, company_id)


def _company_saved(company):
    if company["credit_code"] and not company["credit_code_valid"]:
        flash(
            _("Saved, but the credit code fails its check character: please verify it."), "warning"
        )
    else:
        flash(_("Saved."), "ok")
    return redirect(url_for("registry.companies", q=company["name"]))


@bp.route("/companies/new", methods=["GET", "POST"])
def company_new():
    form = CompanyForm()
    if form.validate_on_submit() and (company := _save(form, _company_saver)):
        return _company_saved(company)
    return render_template(
        "registry/form.html", form=form, title=_("New company"), back=url_for("registry.companies")
    ), (400 if form.errors else 200)


@bp.route("/companies/<int:company_id>/edit", methods=["GET", "POST"])
def company_edit(company_id: int):
    with get_db().cursor() as cur:
        company = get_company(cur, company_id)
    if company is None:
        abort(404, description=f"no company {company_id}")
    form = CompanyForm(data=company if request.method == "GET" else None)
    if form.validate_on_submit() and (saved := _save(form, _company_saver, company_id)):
        return _company_saved(saved)
    warning = None
    if company["credit_code"] and not company["credit_code_valid"]:
        warning = {"credit_code": _("This code fails the GB 32100 check character.")}
    return render_template(
        "registry/form.html",
        form=form,
        title=_("Edit company"),
        back=url_for("registry.companies"),
        warnings=warning or {},
    ), (400 if form.errors else 200)


def _toggle(entity: str, row_id: int, endpoint: str):
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    active = request.form.get("active") == "1"
    conn = get_db()
    with conn.cursor() as cur:
        row = store.set_active(cur, entity, row_id, active)
    conn.commit()
    if row is None:
        abort(404, description=f"no {entity} {row_id}")
    flash(_("Activated.") if active else _("Deactivated."), "ok")
    return redirect(request.referrer if _same_site(request.referrer) else url_for(endpoint))


def _same_site(url: str | None) -> bool:
    return bool(url) and url.startswith(request.host_url)


@bp.route("/companies/<int:company_id>/active", methods=["POST"])
def company_active(company_id: int):
    return _toggle("company", company_id, "registry.companies")


# ---- trucks ------------------------------------------------------------------------------


def _company_choices():
    with get_db().cursor() as cur:
        cur.execute("SELECT id, name FROM companies WHERE active ORDER BY name")
        return [(0, "-")] + [(cid, name) for cid, name in cur.fetchall()]


@bp.route("/trucks")
def trucks():
    q = (request.args.get("q") or "").strip()
    rows, total, page = _search(
        "WHERE (%(q)s = '' OR t.plate ILIKE '%%' || %(q)s || '%%' OR c.name ILIKE '%%' || %(q)s || '%%')",
        "SELECT count(*) FROM trucks t LEFT JOIN companies c ON c.id = t.company_id {where}",
        """SELECT t.id, t.plate, t.plate_color, t.trailer_plate, c.name, t.active
           FROM trucks t LEFT JOIN companies c ON c.id = t.company_id {where}
           ORDER BY t.plate LIMIT %(limit)s OFFSET %(offset)s""",
        {"q": q},
    )
    return render_template(
        "registry/trucks.html", rows=rows, total=total, page=page, q=q, confirm=ConfirmForm()
    )


def _truck_saver(cur, form, truck_id):
    return store.save_truck(cur, form.data, truck_id)


@bp.route("/trucks/new", methods=["GET", "POST"])
def truck_new():
    form = TruckForm()
    form.company_id.choices = _company_choices()
    if form.validate_on_submit() and (truck := _save(form, _truck_saver)):
        flash(_("Saved."), "ok")
        return redirect(url_for("registry.trucks", q=truck["plate"]))
    return render_template(
        "registry/form.html", form=form, title=_("New truck"), back=url_for("registry.trucks")
    ), (400 if form.errors else 200)


@bp.route("/trucks/<int:truck_id>/edit", methods=["GET", "POST"])
def truck_edit(truck_id: int):
    with get_db().cursor() as cur:
        truck = get_truck(cur, truck_id)
    if truck is None:
        abort(404, description=f"no truck {truck_id}")
    data = dict(truck, company_id=truck["company_id"] or 0)
    form = TruckForm(data=data if request.method == "GET" else None)
    form.company_id.choices = _company_choices()
    if form.validate_on_submit() and (saved := _save(form, _truck_saver, truck_id)):
        flash(_("Saved."), "ok")
        return redirect(url_for("registry.trucks", q=saved["plate"]))
    return render_template(
        "registry/form.html", form=form, title=_("Edit truck"), back=url_for("registry.trucks")
    ), (400 if form.errors else 200)


@bp.route("/trucks/<int:truck_id>/active", methods=["POST"])
def truck_active(truck_id: int):
    return _toggle("truck", truck_id, "registry.trucks")


# ---- terminals ---------------------------------------------------------------------------


@bp.route("/terminals")
def terminals():
    q = (request.args.get("q") or "").strip()
    rows, total, page = _search(
        "WHERE (%(q)s = '' OR m.device_id ILIKE '%%' || %(q)s || '%%' OR t.plate ILIKE '%%' || %(q)s || '%%')",
        "SELECT count(*) FROM terminals m JOIN trucks t ON t.id = m.truck_id {where}",
        """SELECT m.id, m.device_id, t.plate, m.valid_from, m.valid_to, m.model,
                  (m.valid_from <= now() AND (m.valid_to IS NULL OR m.valid_to > now()))
           FROM terminals m JOIN trucks t ON t.id = m.truck_id {where}
           ORDER BY m.device_id, m.valid_from LIMIT %(limit)s OFFSET %(offset)s""",
        {"q": q},
    )
    return render_template(
        "registry/terminals.html",
        rows=rows,
        total=total,
        page=page,
        q=q,
        confirm=ConfirmForm(),
        tz=city_tz(),
    )


def _terminal_saver(cur, form, terminal_id):
    tz = city_tz()
    data = dict(form.data)
    data["valid_from"] = data["valid_from"].replace(tzinfo=tz)
    if data.get("valid_to"):
        data["valid_to"] = data["valid_to"].replace(tzinfo=tz)
    return store.save_terminal(cur, data, terminal_id)


@bp.route("/terminals/new", methods=["GET", "POST"])
def terminal_new():
    form = TerminalForm()
    if form.validate_on_submit() and (saved := _save(form, _terminal_saver)):
        flash(_("Saved."), "ok")
        return redirect(url_for("registry.terminals", q=saved["device_id"]))
    return render_template(
        "registry/form.html",
        form=form,
        title=_("New terminal binding"),
        back=url_for("registry.terminals"),
    ), (400 if form.errors else 200)


@bp.route("/terminals/<int:terminal_id>/edit", methods=["GET", "POST"])
def terminal_edit(terminal_id: int):
    conn = get_db()
    with conn.cursor() as cur:
        term = get_terminal(cur, terminal_id)
        if term is None:
            abort(404, description=f"no terminal binding {terminal_id}")
        cur.execute("SELECT plate FROM trucks WHERE id = %s", (term["truck_id"],))
        plate = cur.fetchone()[0]
    tz = city_tz()
    data = dict(
        term,
        plate=plate,
        valid_from=term["valid_from"].astimezone(tz).replace(tzinfo=None),
        valid_to=term["valid_to"].astimezone(tz).replace(tzinfo=None) if term["valid_to"] else None,
    )
    form = TerminalForm(data=data if request.method == "GET" else None)
    if form.validate_on_submit() and (saved := _save(form, _terminal_saver, terminal_id)):
        flash(_("Saved."), "ok")
        return redirect(url_for("registry.terminals", q=saved["device_id"]))
    return render_template(
        "registry/form.html",
        form=form,
        title=_("Edit terminal binding"),
        back=url_for("registry.terminals"),
    ), (400 if form.errors else 200)


@bp.route("/terminals/<int:terminal_id>/deactivate", methods=["POST"])
def terminal_deactivate(terminal_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    conn = get_db()
    try:
        with conn.cursor() as cur:
            row = store.end_terminal(cur, terminal_id, dt.datetime.now(dt.UTC))
        conn.commit()
    except FieldError as exc:
        conn.rollback()
        flash(str(exc), "error")
        return redirect(url_for("registry.terminals"))
    if row is None:
        abort(404, description=f"no terminal binding {terminal_id}")
    flash(_("The binding ends now."), "ok")
    return redirect(url_for("registry.terminals", q=row["device_id"]))


# ---- zones -------------------------------------------------------------------------------

_KINDS = ("site", "disposal", "route", "restricted", "speed")


@bp.route("/zones", methods=["GET", "POST"])
def zones():
    form = ZoneUploadForm()
    errors: list[str] = []
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            errors = _import_zones(form)
        status = 400 if (errors or form.errors) else 200
        if status == 200 and not form.dry_run.data:
            return redirect(url_for("registry.zones"))
    q = (request.args.get("q") or "").strip()
    kind = request.args.get("kind") or ""
    if kind and kind not in _KINDS:
        bad(f"kind must be one of {', '.join(_KINDS)}")
    rows, total, page = _search(
        """WHERE (%(q)s = '' OR code ILIKE '%%' || %(q)s || '%%' OR name ILIKE '%%' || %(q)s || '%%'
                  OR district = %(q)s) AND (%(kind)s = '' OR kind = %(kind)s)""",
        "SELECT count(*) FROM geofence_zones {where}",
        """SELECT id, code, kind, name, district, valid_from, valid_to, active
           FROM geofence_zones {where} ORDER BY kind, code LIMIT %(limit)s OFFSET %(offset)s""",
        {"q": q, "kind": kind},
    )
    return render_template(
        "registry/zones.html",
        rows=rows,
        total=total,
        page=page,
        q=q,
        kind=kind,
        kinds=_KINDS,
        form=form,
        import_errors=errors,
        confirm=ConfirmForm(),
    ), status


def _import_zones(form) -> list[str]:
    s = settings()
    upload = form.file.data
    name = Path(upload.filename or "upload").name
    if len(name) > 200:
        name = name[-200:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        upload.save(path)
        if path.stat().st_size > s["web"]["max_upload_bytes"]:
            return [_("The file is larger than %(n)s bytes.", n=s["web"]["max_upload_bytes"])]
        defaults = {"width_m": form.width_m.data} if form.width_m.data else None
        try:
            zones = read_zones_file(
                path,
                fmt=form.fmt.data or None,
                crs=form.crs.data,
                default_kind=form.kind.data or None,
                defaults=defaults,
                center=(s.city["center_lon"], s.city["center_lat"]),
                max_distance_km=s["geofence"]["max_zone_distance_km"],
            )
        except ZoneImportError as exc:
            return [e.replace(str(path), name) for e in exc.errors]
        except ValueError as exc:  # e.g. a file name without a known extension
            return [str(exc).replace(str(path), name)]
    if form.dry_run.data:
        flash(_("%(n)s zone(s) are valid; nothing stored (check only).", n=len(zones)), "ok")
        return []
    conn = get_db()
    with conn.cursor() as cur:  # the audit row commits with upsert_zones' transaction
        record(
            cur,
            "zones.import",
            "geofence_zones",
            None,
            None,
            {"file": name, "crs": form.crs.data, "codes": [z.code for z in zones]},
        )
    counts = upsert_zones(conn, zones)
    # Violations raised before a district was imported are in it from now on, not only after
    # the scheduler's next run.
    fill_missing_districts(conn)
    flash(_("Imported: %(i)s new, %(u)s updated.", i=counts["inserted"], u=counts["updated"]), "ok")
    return []


@bp.route("/zones/<code>/active", methods=["POST"])
def zone_active(code: str):
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    active = request.form.get("active") == "1"
    conn = get_db()
    with conn.cursor() as cur:
        cur.execute("SELECT active FROM geofence_zones WHERE code = %s", (code,))
        row = cur.fetchone()
        if row is None:
            abort(404, description=f"no zone {code!r}")
        record(
            cur,
            "zone.activate" if active else "zone.deactivate",
            "geofence_zones",
            code,
            {"active": row[0]},
            {"active": active},
        )
    set_zone_active(conn, code, active)  # commits the audit row with the change
    flash(_("Activated.") if active else _("Deactivated."), "ok")
    return redirect(url_for("registry.zones", q=code))
