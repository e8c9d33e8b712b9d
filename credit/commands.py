"""`muck credit …` (scores and lists) and `muck export …` (双公示 and list files)."""

from __future__ import annotations

import datetime as dt
import sys

import click

from core.clicontext import format_time, pass_ctx

WHAT = {
    "violation": "violation",
    "penalty": "penalty category",
    "withdrawn": "withdrawn",
    "not_yet_decided": "not decided yet",
    "floor": "floor",
}


def explanation(score, tz: str) -> list[str]:
    """The score's lines as text (the CLI's; the web page renders its own, translated)."""
    out = [
        f"{score.subject} {score.subject_id}: {score.score} points at {format_time(score.as_of, tz)}"
        f" (cycle {score.cycle_start} – {score.cycle_end - dt.timedelta(days=1)}, base {score.base})"
    ]
    for line in score.lines:
        case = f"case {line.case_no} ({line.decision_no or '-'}, decided {line.decision_date})"
        if line.what == "violation":
            out.append(f"  -{line.points:<3} {case}: violation {line.violation_id} {line.kind}")
        elif line.what == "penalty":
            out.append(f"  -{line.points:<3} {case}: penalty category {line.penalty_category}")
        elif line.what == "withdrawn":
            out.append(
                f"   0   {case}: withdrawn {format_time(line.at, tz)} ({line.note}); "
                f"{line.restored} points restored"
            )
        elif line.what == "not_yet_decided":
            out.append(f"   0   {case}: decided only at {format_time(line.at, tz)}")
        else:
            out.append(f"  +{-line.points:<3} the score does not go below 0")
    return out


def _as_of(text: str | None, tz_settings):
    from credit.scoring import Scheme

    if not text:
        return None
    scheme = Scheme.from_settings(tz_settings)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date (YYYY-MM-DD)", param_hint="--at"
        ) from None
    return scheme.end_of_day(day)


@click.group()
def credit() -> None:
    """Credit scores and lists (名单): scores explained, automatic listings signed off."""


@credit.command("score")
@click.option("--company", "company_id", type=int, help="Company id.")
@click.option("--truck", "truck_id", type=int, help="Truck id (when the scheme scores trucks).")
@click.option("--driver", help="Driver licence (when the scheme scores drivers).")
@click.option("--at", "at_day", help="The score at the end of this day (YYYY-MM-DD, city time).")
@pass_ctx
def score_cmd(mctx, company_id, truck_id, driver, at_day) -> None:
    """A score now or at a past date, with every case and violation behind it."""
    from credit.scoring import SchemeError, subject_score

    chosen = [
        (k, v) for k, v in (("company", company_id), ("truck", truck_id), ("driver", driver)) if v
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --company, --truck, --driver")
    settings = mctx.settings
    conn = mctx.connect()
    subject, key = chosen[0]
    if subject != "driver":
        with conn.cursor() as cur:
            table = "companies" if subject == "company" else "trucks"
            cur.execute(f"SELECT 1 FROM {table} WHERE id = %s", (key,))  # noqa: S608 (fixed names)
            found = cur.fetchone() is not None
        conn.rollback()
        if not found:
            conn.close()
            raise click.ClickException(f"no {subject} {key}")
    try:
        score = subject_score(conn, settings, subject, key, _as_of(at_day, settings))
    except SchemeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    for line in explanation(score, settings.city["timezone"]):
        click.echo(line)


@credit.command("evaluate")
@pass_ctx
def evaluate_cmd(mctx) -> None:
    """Run the listing job once: propose entries, drop stale proposals, expire entries."""
    from credit.lists import evaluate

    conn = mctx.connect()
    try:
        result = evaluate(conn, mctx.settings)
    finally:
        conn.close()
    click.echo(
        f"proposed {len(result.proposed)}, dropped {len(result.dropped)}, "
        f"expired {len(result.expired)}"
    )


@credit.command("lists")
@click.option(
    "--status", type=click.Choice(["pending", "active", "rejected", "removed"]), help="Only these."
)
@click.option(
    "--list", "list_type", type=click.Choice(["watch", "red", "black"]), help="Only this list."
)
@pass_ctx
def lists_cmd(mctx, status, list_type) -> None:
    """List entries, newest first."""
    from credit.lists import list_entries

    conn = mctx.connect()
    try:
        rows = list_entries(conn, status=status, list_type=list_type)
    finally:
        conn.close()
    for e in rows:
        click.echo(
            f"{e['id']:>6}  {e['status']:8}  {e['list_type']:5}  {e['subject_kind']:7}  "
            f"{e['subject_name']}  listed {e['listed_on'] or '-'} until "
            f"{e['planned_removal_on'] or '-'}  cases {','.join(e['case_nos']) or '-'}  {e['reason']}"
        )


def _list_action(action: str):
    @pass_ctx
    def command(mctx, entry_id, actor, note, reason=None) -> None:
        from credit.lists import ListError, reject, remove, sign_off

        conn = mctx.connect()
        try:
            if action == "sign-off":
                sign_off(conn, mctx.settings, entry_id, actor, note)
            elif action == "reject":
                reject(conn, entry_id, actor, note or "")
            else:
                remove(conn, mctx.settings, entry_id, actor, reason, note or "")
        except ListError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        finally:
            conn.close()
        click.echo(f"entry {entry_id}: {action} done")

    return command


for _name, _help in (
    ("sign-off", "Sign off a pending automatic listing: it takes effect today."),
    ("reject", "Refuse a pending listing (--note gives the reason)."),
    ("remove", "Remove an entry in force early: credit repair or an upheld appeal."),
):
    _cmd = _list_action(_name)
    _cmd = click.option("--note", help="Why (required to reject or remove).")(_cmd)
    _cmd = click.option("--by", "actor", required=True, help="The credit officer.")(_cmd)
    if _name == "remove":
        _cmd = click.option(
            "--reason",
            type=click.Choice(["credit_repair", "appeal_upheld"]),
            required=True,
            help="Credit repair (信用修复) or an upheld appeal (申诉成立).",
        )(_cmd)
    _cmd = click.argument("entry_id", type=int)(_cmd)
    credit.command(_name, help=_help)(_cmd)


@click.group("export")
def export_group() -> None:
    """Files for the city's credit platform: penalty records (双公示) and list records (名单),
    CSV (UTF-8 with BOM), XLSX or JSON. Every export is recorded with its SHA-256 and the
    file itself (`muck export fetch ID` gives it back byte for byte)."""


def _day(text: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


def _export_command(kind: str, help_text: str):
    @export_group.command(kind, help=help_text)
    @click.option("--from", "start", required=True, help="First day (YYYY-MM-DD, city time).")
    @click.option("--to", "end", required=True, help="Last day, included (YYYY-MM-DD).")
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "xlsx", "json"]),
        default="csv",
        show_default=True,
        help="File format: CSV (UTF-8 with BOM), XLSX or JSON.",
    )
    @click.option(
        "--out", type=click.Path(dir_okay=False), help="File to write (default: its name)."
    )
    @click.option("--by", "actor", default="cli", show_default=True, help="Who exports (recorded).")
    @pass_ctx
    def command(mctx, start, end, fmt, out, actor) -> None:
        from credit.exports import ExportError, export

        first, last = _day(start, "--from"), _day(end, "--to")
        conn = mctx.connect()
        try:
            record, data = export(conn, mctx.settings, kind, first, last, fmt, actor, via="cli")
        except ExportError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        finally:
            conn.close()
        path = out or record.filename
        with open(path, "wb") as fh:
            fh.write(data)
        click.echo(
            f"{path}: {record.row_count} records, {record.warning_count} warnings, "
            f"sha256 {record.sha256} (export {record.id})"
        )
        if record.warning_count:
            click.echo(
                f"warning: {record.warning_count} records failed a check; they are exported "
                f"with the reason in the 数据校验 column",
                err=True,
            )

    return command


_export_command("penalties", "Penalty records (双公示) of decided cases by decision date.")
_export_command("lists", "List records (名单) that took effect or were removed in the range.")


@export_group.command("fetch")
@click.argument("export_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: its name).")
@pass_ctx
def fetch_cmd(mctx, export_id, out) -> None:
    """Download a recorded export again, checked against its SHA-256."""
    from credit.exports import ExportTampered, fetch_export

    conn = mctx.connect()
    try:
        found = fetch_export(conn, export_id)
    except ExportTampered as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    if found is None:
        click.echo(f"error: no export {export_id}", err=True)
        sys.exit(1)
    record, data = found
    path = out or record.filename
    with open(path, "wb") as fh:
        fh.write(data)
    click.echo(f"{path}: sha256 {record.sha256}, as exported by {record.created_by}")
