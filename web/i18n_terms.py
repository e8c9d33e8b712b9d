"""Words translated at run time from data (roles, zone kinds), listed so that
`pybabel extract` keeps them in the catalogue."""

from flask_babel import lazy_gettext as _l

TERMS = (
    _l("supervisor"),
    _l("enforcement"),
    _l("credit"),
    _l("admin"),
    _l("site"),
    _l("disposal"),
    _l("route"),
    _l("restricted"),
    _l("speed"),
    _l("reopened"),
)
