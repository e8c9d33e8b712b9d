"""Case pages: the list, a case opened from violations selected on the violation list, its
edit, decide, publish, close and withdraw forms, and its notices (PDF).

Everyone who may see cases reads them ("cases"); officers and administrators act on them
("enforce"). Every change goes through credit/cases.py with the audit_log row in the same
transaction; a refused change shows the message next to the field it is about (400).
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from core.db import transaction
from credit import cases as K
from credit.notices import NOTICES, render_notice
from credit.numbering import peek
from web import violation_queries as vq
from web.audit import record
from web.auth import require
from web.db import get_db
from web.params import choice_arg, page_args, settings

bp = Blueprint("cases", __name__, url_prefix="/cases")

# (own msgids: "open" and "closed" are a lid's states elsewhere)
STATUS_LABELS = {
    "open": _l("case open"),
    "decided": _l("case decided"),
    "published": _l("case published"),
    "closed": _l("case closed"),
    "withdrawn": _l("case withdrawn"),
}
ACTION_LABELS = {
    "opened": _l("opened"),
    "edited": _l("edited"),
    "decided": _l("case decided"),
    "published": _l("case published"),
    "closed": _l("case closed"),
    "withdrawn": _l("case withdrawn"),
    "notice": _l("notice made"),
    "migrated": _l("made from an older case"),
}
NOTICE_LABELS = {"advance": _l("Advance notice (告知书)"), "decision": _l("Decision (决定书)")}


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _categories():
    return [("", "-")] + [(c, c) for c in settings()["cases"]["penalty_categories"]]


class PenaltyFields(FlaskForm):
    penalty_category = SelectField(_l("Penalty category (处罚类别)"), validators=[Optional()])
    penalty_content = StringField(
        _l("Penalty content (处罚内容)"),
        filters=[_strip],
        validators=[Optional(), Length(max=2000)],
    )
    fine_yuan = StringField(
        _l("Fine (元)"), filters=[_strip], validators=[Optional(), Length(max=20)]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.penalty_category.choices = _categories()


class CaseForm(PenaltyFields):
    party_name = StringField(
        _l("Party (当事人)"), filters=[_strip], validators=[Optional(), Length(max=200)]
    )
    party_credit_code = StringField(
        _l("Unified social credit code"), filters=[_strip], validators=[Optional(), Length(max=18)]
    )
    legal_representative = StringField(
        _l("Legal representative"), filters=[_strip], validators=[Optional(), Length(max=100)]
    )
    party_id_no = StringField(
        _l("Identity document number"), filters=[_strip], validators=[Optional(), Length(max=40)]
    )
    driver_name = StringField(
        _l("Driver"), filters=[_strip], validators=[Optional(), Length(max=100)]
    )
    driver_licence = StringField(
        _l("Driving licence"), filters=[_strip], validators=[Optional(), Length(max=40)]
    )
    facts = TextAreaField(_l("Facts (违法事实)"), validators=[Optional(), Length(max=20000)])
    legal_basis = TextAreaField(
        _l("Legal basis (处罚依据)"), validators=[Optional(), Length(max=5000)]
    )


class OpenForm(FlaskForm):
    violations = HiddenField()
    party_name = StringField(
        _l("Party (当事人), when the truck has no company"),
        filters=[_strip],
        validators=[Optional(), Length(max=200)],
    )
    party_id_no = StringField(
        _l("Identity document number"), filters=[_strip], validators=[Optional(), Length(max=40)]
    )
    note = StringField(_l("Note"), filters=[_strip], validators=[Optional(), Length(max=2000)])


class DecideForm(PenaltyFields):
    decision_no = StringField(
        _l("Decision document number (行政处罚决定书文号)"),
        filters=[_strip],
        validators=[Optional(), Length(max=200)],
    )
    decision_date = DateField(_l("Decision date"), validators=[Optional()])
    note = StringField(_l("Note"), filters=[_strip], validators=[Optional(), Length(max=2000)])


class WithdrawForm(FlaskForm):
    reason = StringField(
        _l("Reason (required)"), filters=[_strip], validators=[DataRequired(), Length(max=2000)]
    )


class StepForm(FlaskForm):
    note = StringField(_l("Note"), filters=[_strip], validators=[Optional(), Length(max=2000)])


def _refuse(form: FlaskForm, exc: K.CaseError, fallback: str) -> None:
    """Put the refusal next to its field (or the form's first field)."""
    name = exc.field if exc.field and exc.field in form._fields else fallback
    field = form[name]
    field.errors = [*field.errors, str(exc)]


def _csrf_or_400(form: FlaskForm) -> None:
    if form.errors.get("csrf_token"):
        abort(400, description="missing or bad CSRF token")


def _ids(raw: list[str]) -> list[int]:
    out = []
    for item in raw:
        for part in str(item).replace(",", " ").split():
            if not part.isdigit():
                abort(400, description=f"violation id {part[:20]!r} is not a number")
            out.append(int(part))
    return sorted(set(out))


# ---- list and one case --------------------------------------------------------------------


@bp.route("/")
@require("cases")
def index():
    status = choice_arg("status", K.STATUSES)
    page = page_args()
    with get_db().cursor() as cur:
        rows, total = K.list_cases(cur, status=status, limit=page.per_page, offset=page.offset)
    get_db().rollback()
    return render_template(
        "cases/list.html",
        rows=rows,
        total=total,
        page=page,
        status=status,
        statuses=K.STATUSES,
        labels=STATUS_LABELS,
    )


def _show(case_id: int, forms: dict | None = None, code: int = 200):
    conn = get_db()
    with conn.cursor() as cur:
        case = K.get_case(cur, case_id)
        if case is None:
            abort(404, description=f"no case {case_id}")
        violations = K.case_violations(cur, case_id)
        events = K.case_events(cur, case_id)
        proposal = (
            peek(cur, settings(), "decision", K.local_today(settings()).year)
            if case["status"] == "open"
            else None
        )
    conn.rollback()
    forms = forms or {}
    edit = forms.get("edit") or CaseForm(formdata=None, data={k: case.get(k) for k in K.EDITABLE})
    decide = forms.get("decide") or DecideForm(
        formdata=None,
        prefix="decide",
        data={k: case.get(k) for k in ("penalty_category", "penalty_content", "fine_yuan")},
    )
    return (
        render_template(
            "cases/show.html",
            case=case,
            violations=violations,
            events=events,
            edit=edit,
            decide=decide,
            withdraw=forms.get("withdraw") or WithdrawForm(formdata=None),
            step=forms.get("step") or StepForm(formdata=None),
            proposal=proposal,
            labels=STATUS_LABELS,
            action_labels=ACTION_LABELS,
            kind_labels=vq.KIND_LABELS,
            violation_labels=vq.STATUS_LABELS,
            notices=NOTICE_LABELS,
        ),
        code,
    )


@bp.route("/<int:case_id>")
@require("cases")
def show(case_id: int):
    return _show(case_id)


# ---- opening ------------------------------------------------------------------------------


@bp.route("/new", methods=["GET", "POST"])
@require("enforce")
def new():
    form = OpenForm()
    raw = (
        request.form.getlist("violations")
        if request.method == "POST"
        else request.args.getlist("v")
    )
    ids = _ids(raw)
    code = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                with transaction(get_db()) as cur:
                    case_id = K.open_case(
                        cur,
                        settings(),
                        ids,
                        current_user.username,
                        fields={
                            k: getattr(form, k).data
                            for k in ("party_name", "party_id_no")
                            if getattr(form, k).data
                        },  # fmt: skip
                        note=form.note.data or None,
                    )
                    case = K.get_case(cur, case_id)
                    record(cur, "case.open", "credit_cases", case_id, None,
                           {"case_no": case["case_no"], "violations": ids})  # fmt: skip
            except K.CaseError as exc:
                _refuse(form, exc, "violations")
            else:
                flash(_("Case %(no)s opened.", no=case["case_no"]), "ok")
                return redirect(url_for("cases.show", case_id=case_id))
        else:
            _csrf_or_400(form)
        code = 400
    with get_db().cursor() as cur:
        chosen = K.violations_of(cur, ids) if ids else []
    get_db().rollback()
    if not ids and code == 200:
        form.violations.errors = [_("Choose confirmed violations on the violation list first.")]
        code = 400
    form.violations.data = " ".join(map(str, ids))
    return (
        render_template(
            "cases/new.html",
            form=form,
            chosen=chosen,
            missing=sorted(set(ids) - {v["id"] for v in chosen}),
            kind_labels=vq.KIND_LABELS,
            violation_labels=vq.STATUS_LABELS,
        ),
        code,
    )


# ---- changes ------------------------------------------------------------------------------


def _audited(case_id: int, action: str, work) -> None:
    """Run `work(cur)` and the audit row (case before and after) in one transaction."""
    with transaction(get_db()) as cur:
        before = K.get_case(cur, case_id)
        if before is None:
            abort(404, description=f"no case {case_id}")
        work(cur)
        after = K.get_case(cur, case_id)
        record(cur, f"case.{action}", "credit_cases", case_id,
               K.snapshot(before), K.snapshot(after))  # fmt: skip


@bp.route("/<int:case_id>/edit", methods=["POST"])
@require("enforce")
def edit(case_id: int):
    form = CaseForm()
    if not form.validate_on_submit():
        _csrf_or_400(form)
        return _show(case_id, {"edit": form}, 400)
    fields = {k: form[k].data for k in K.EDITABLE}
    try:
        _audited(case_id, "edit",
                 lambda cur: K.edit_case(cur, settings(), case_id, current_user.username, fields))  # fmt: skip
    except K.CaseError as exc:
        _refuse(form, exc, "facts")
        return _show(case_id, {"edit": form}, 400)
    flash(_("Case saved."), "ok")
    return redirect(url_for("cases.show", case_id=case_id))


@bp.route("/<int:case_id>/decide", methods=["POST"])
@require("enforce")
def decide(case_id: int):
    form = DecideForm(prefix="decide")
    if not form.validate_on_submit():
        _csrf_or_400(form)
        return _show(case_id, {"decide": form}, 400)
    fields = {k: form[k].data for k in ("penalty_category", "penalty_content", "fine_yuan")}
    fields = {k: v for k, v in fields.items() if v}
    try:
        _audited(
            case_id,
            "decide",
            lambda cur: K.decide(
                cur,
                settings(),
                case_id,
                current_user.username,
                decision_no=form.decision_no.data,
                decision_date=form.decision_date.data,
                fields=fields,
                note=form.note.data or None,
            ),
        )
    except K.CaseError as exc:
        _refuse(form, exc, "decision_no")
        return _show(case_id, {"decide": form}, 400)
    flash(_("Decision recorded."), "ok")
    return redirect(url_for("cases.show", case_id=case_id))


def _step(case_id: int, verb: str, message: str):
    form = StepForm()
    if not form.validate_on_submit():
        _csrf_or_400(form)
        return _show(case_id, {"step": form}, 400)
    try:
        _audited(case_id, verb,
                 lambda cur: getattr(K, verb)(cur, case_id, current_user.username,
                                              form.note.data or None))  # fmt: skip
    except K.CaseError as exc:
        _refuse(form, exc, "note")
        return _show(case_id, {"step": form}, 400)
    flash(message, "ok")
    return redirect(url_for("cases.show", case_id=case_id))


@bp.route("/<int:case_id>/publish", methods=["POST"])
@require("enforce")
def publish(case_id: int):
    return _step(case_id, "publish", _("Case published."))


@bp.route("/<int:case_id>/close", methods=["POST"])
@require("enforce")
def close(case_id: int):
    return _step(case_id, "close", _("Case closed."))


@bp.route("/<int:case_id>/withdraw", methods=["POST"])
@require("enforce")
def withdraw(case_id: int):
    form = WithdrawForm()
    if not form.validate_on_submit():
        _csrf_or_400(form)
        return _show(case_id, {"withdraw": form}, 400)
    try:
        _audited(case_id, "withdraw",
                 lambda cur: K.withdraw(cur, case_id, current_user.username, form.reason.data))  # fmt: skip
    except K.CaseError as exc:
        _refuse(form, exc, "reason")
        return _show(case_id, {"withdraw": form}, 400)
    flash(_("Case withdrawn; its violations are confirmed again."), "ok")
    return redirect(url_for("cases.show", case_id=case_id))


@bp.route("/<int:case_id>/<notice>.pdf")
@require("enforce")
def notice_pdf(case_id: int, notice: str):
    if notice not in NOTICES:
        abort(404, description=f"no notice {notice!r}")
    conn = get_db()
    with conn.cursor() as cur:
        exists = K.get_case(cur, case_id) is not None
    conn.rollback()
    if not exists:
        abort(404, description=f"no case {case_id}")
    try:
        pdf = render_notice(conn, settings(), case_id, notice, current_user.username)
    except K.CaseError as exc:
        abort(400, description=str(exc))
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f"attachment; filename=case-{case_id}-{notice}.pdf"},
    )
