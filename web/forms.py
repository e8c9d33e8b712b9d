"""Forms of the registry and user pages (Flask-WTF: every POST carries a CSRF token)."""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    FloatField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from registry.validation import plate_problem
from web.users import MIN_PASSWORD, ROLES, USERNAME

# GB 32100-2015 alphabet; the check character is verified separately (warn, not refuse).
CREDIT_CODE_FORMAT = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{18}$")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
PLATE_COLORS = ("yellow", "blue", "green", "yellow_green", "white", "black")


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class CompanyForm(FlaskForm):
    name = StringField(_l("Name"), filters=[_strip], validators=[DataRequired(), Length(max=200)])
    credit_code = StringField(
        _l("Unified social credit code"),
        filters=[_strip, lambda v: v.upper() if v else v],
        validators=[Optional(), Length(max=18)],
    )
    legal_representative = StringField(
        _l("Legal representative"), filters=[_strip], validators=[Optional(), Length(max=100)]
    )
    phone = StringField(_l("Phone"), filters=[_strip], validators=[Optional(), Length(max=40)])

    def validate_credit_code(self, field):
        if field.data and not CREDIT_CODE_FORMAT.match(field.data):
            raise ValidationError(
                _l("18 characters of 0-9 and A-Z without I, O, S, V, Z (GB 32100-2015)")
            )


def _plate_check(form, field):
    if field.data and plate_problem(field.data):
        raise ValidationError(
            _l("Malformed plate: expected e.g. 粤B12345 (province, letter, 5-6 characters)")
        )


class TruckForm(FlaskForm):
    plate = StringField(_l("Plate"), filters=[_strip], validators=[DataRequired(), _plate_check])
    plate_color = SelectField(_l("Plate colour"), choices=[(c, c) for c in PLATE_COLORS])
    trailer_plate = StringField(
        _l("Trailer plate"), filters=[_strip], validators=[Optional(), _plate_check]
    )
    company_id = SelectField(_l("Company"), coerce=int, validators=[Optional()])


class TerminalForm(FlaskForm):
    device_id = StringField(_l("Device id"), filters=[_strip], validators=[DataRequired()])
    plate = StringField(_l("Truck plate"), filters=[_strip], validators=[DataRequired()])
    valid_from = DateTimeLocalField(
        _l("Bound from"), format="%Y-%m-%dT%H:%M", validators=[DataRequired()]
    )
    valid_to = DateTimeLocalField(
        _l("Bound until"), format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )
    model = StringField(
        _l("Terminal model"), filters=[_strip], validators=[Optional(), Length(max=100)]
    )

    def validate_device_id(self, field):
        if not DEVICE_ID.match(field.data or ""):
            raise ValidationError(_l("1-64 characters of A-Z a-z 0-9 _ . : -"))

    def validate_valid_to(self, field):
        if field.data and self.valid_from.data and field.data <= self.valid_from.data:
            raise ValidationError(_l("Must be after the start of the binding"))


class ZoneUploadForm(FlaskForm):
    file = FileField(_l("Zone file (GeoJSON, GPX or KML)"), validators=[FileRequired()])
    fmt = SelectField(
        _l("Format"),
        choices=[
            ("", _l("detect from the file name")),
            ("geojson", "GeoJSON"),
            ("gpx", "GPX"),
            ("kml", "KML"),
        ],
    )
    crs = SelectField(
        _l("Coordinates in the file"),
        choices=[("wgs84", "WGS-84"), ("gcj02", "GCJ-02"), ("bd09", "BD-09")],
    )
    kind = SelectField(
        _l("Kind for features without one"),
        choices=[
            ("", "-"),
            ("site", _l("construction site")),
            ("disposal", _l("disposal site")),
            ("route", _l("approved route")),
            ("restricted", _l("restricted zone")),
            ("speed", _l("speed zone")),
        ],
    )
    width_m = FloatField(
        _l("Route corridor half-width (m), for routes without width_m"),
        validators=[Optional(), NumberRange(min=1, max=10000)],
    )
    dry_run = BooleanField(_l("Only check, store nothing"))


class UserForm(FlaskForm):
    username = StringField(_l("Username"), filters=[_strip], validators=[DataRequired()])
    display_name = StringField(
        _l("Display name"), filters=[_strip], validators=[Optional(), Length(max=100)]
    )
    role = SelectField(_l("Role"), choices=[(r, r) for r in ROLES])
    password = PasswordField(
        _l("Password"), validators=[DataRequired(), Length(min=MIN_PASSWORD, max=256)]
    )

    def validate_username(self, field):
        if not USERNAME.match(field.data or ""):
            raise ValidationError(_l("1-64 characters of A-Z a-z 0-9 _ . @ -"))


class ConfirmForm(FlaskForm):
    """An empty form: only its CSRF token, for the POST buttons (deactivate, log out)."""
