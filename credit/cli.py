"""`muck case …`: cases and penalty decisions from the command line; and the violation
commands that go through a case (`muck violations open-case` / `close`, added to the
violations group by muck/cli.py)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from core.clicontext import pass_ctx
from credit.cases import STATUSES
from credit.notices import NOTICES


def _actor(by: str | None) -> str:
    return by or getpass.getuser()


def _fields(**given) -> dict:
    return {k: v for k, v in given.items() if v is not None}


def _resolve(cur, ref: str) -> int:
    """A case by id, case number or decision document number."""
    if ref.isdigit():
        return int(ref)
    cur.execute(
        "SELECT id FROM credit_cases WHERE case_no = %s OR decision_no = %s ORDER BY id LIMIT 1",
        (ref, ref),
    )
    row = cur.fetchone()
    if row is None:
        raise click.ClickException(f"no case numbered {ref!r}")
    return row[0]


def _run(mctx, work):
    """Run `work(cur)` in one transaction; a CaseError is the command's error message."""
    from core.db import transaction
    from credit.cases import CaseError

    conn = mctx.connect()
    try:
        with transaction(conn) as cur:
            return work(cur)
    except CaseError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise click.ClickException(f"{exc}{where}") from None
    finally:
        conn.close()


_by = click.option("--by", "by", help="Who acts; default: the current user name.")
_penalty = [
    click.option("--penalty-category", help="处罚类别, one of cases.penalty_categories."),
    click.option("--penalty-content", help="处罚内容 (default: made from the category and fine)."),
    click.option("--fine", help="Fine in 元 (e.g. 20000 or 20,000.00)."),
]


def _with(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@click.group("case")
def case_group() -> None:
    """Cases and penalty decisions (立案 → 处罚决定): open, decide, publish, close, withdraw,
    notices. See docs/cases.md."""


@case_group.command("open")
@click.argument("violation_ids", nargs=-1, type=int, required=True)
@click.option("--party-name", help="The party, when the truck has no company (an individual).")
@click.option("--party-id-no", help="The individual party's identity document number.")
@click.option("--legal-representative", help="Overrides the registry's legal representative.")
@click.option("--driver-name", help="The driver.")
@click.option("--driver-licence", help="The driver's licence number.")
@click.option("--facts", help="违法事实 (default: prefilled from the violations' evidence).")
@click.option("--legal-basis", help="处罚依据 (default: the city's [cases.legal_basis] table).")
@_with(_penalty)
@click.option("--note", help="A note recorded with the opening.")
@_by
@pass_ctx
def open_cmd(mctx, violation_ids, note, by, fine, **fields) -> None:
    """Open a case over confirmed violations of one company (or one truck)."""
    from credit.cases import get_case, open_case

    def work(cur):
        case_id = open_case(
            cur,
            mctx.settings,
            list(violation_ids),
            _actor(by),
            fields=_fields(**fields, fine_yuan=fine),
            note=note,
        )
        return get_case(cur, case_id)

    case = _run(mctx, work)
    click.echo(f"case {case['id']} {case['case_no']}: open ({case['party_name']})")


@case_group.command("edit")
@click.argument("case")
@click.option("--party-name", help="当事人名称.")
@click.option("--party-credit-code", help="统一社会信用代码 (kept and flagged when invalid).")
@click.option("--legal-representative", help="法定代表人.")
@click.option("--party-id-no", help="An individual party's identity document number.")
@click.option("--driver-name", help="The driver.")
@click.option("--driver-licence", help="The driver's licence number.")
@click.option("--facts", help="违法事实.")
@click.option("--legal-basis", help="处罚依据.")
@_with(_penalty)
@_by
@pass_ctx
def edit_cmd(mctx, case, by, fine, **fields) -> None:
    """Change fields of an open case (each change is recorded)."""
    from credit.cases import edit_case

    changed = _run(
        mctx,
        lambda cur: edit_case(
            cur, mctx.settings, _resolve(cur, case), _actor(by), _fields(**fields, fine_yuan=fine)
        ),
    )
    click.echo(f"case {case}: {'changed' if changed else 'nothing to change'}")


@case_group.command("decide")
@click.argument("case")
@click.option("--decision-no", help="行政处罚决定书文号 (default: the next of the city's pattern).")
@click.option(
    "--date", "decision_date", type=click.DateTime(["%Y-%m-%d"]), help="Decision date (today)."
)
@_with(_penalty)
@click.option("--note", help="A note recorded with the decision.")
@_by
@pass_ctx
def decide_cmd(mctx, case, decision_no, decision_date, note, by, fine, **fields) -> None:
    """Record the penalty decision of an open case."""
    from credit.cases import decide

    number = _run(
        mctx,
        lambda cur: decide(
            cur,
            mctx.settings,
            _resolve(cur, case),
            _actor(by),
            decision_no=decision_no,
            decision_date=decision_date.date() if decision_date else None,
            fields=_fields(**fields, fine_yuan=fine),
            note=note,
        ),
    )
    click.echo(f"case {case}: decided, {number}")


def _simple(name: str, verb: str, doc: str):
    @click.argument("case")
    @click.option("--note", help="A note recorded with the change.")
    @_by
    @pass_ctx
    def command(mctx, case, note, by) -> None:
        from credit import cases

        _run(mctx, lambda cur: getattr(cases, verb)(cur, _resolve(cur, case), _actor(by), note))
        click.echo(f"case {case}: {name}")

    command.__doc__ = doc
    return command


case_group.command("publish")(
    _simple("published", "publish", "Mark a decided case published (双公示).")
)
case_group.command("close")(
    _simple("closed", "close", "Close a decided or published case (结案); its violations close.")
)


@case_group.command("withdraw")
@click.argument("case")
@click.option("--reason", required=True, help="Why the case is withdrawn (required).")
@_by
@pass_ctx
def withdraw_cmd(mctx, case, reason, by) -> None:
    """Withdraw a case: its violations go back to confirmed, a decision stops counting."""
    from credit.cases import withdraw

    _run(mctx, lambda cur: withdraw(cur, _resolve(cur, case), _actor(by), reason))
    click.echo(f"case {case}: withdrawn")


@case_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only cases in this status.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Cases listed at most.",
)
@pass_ctx
def list_cmd(mctx, status, limit) -> None:
    """Newest cases first."""
    from credit.cases import list_cases

    rows, total = _run(mctx, lambda cur: list_cases(cur, status=status, limit=limit))
    for r in rows:
        fine = "" if r["fine_yuan"] is None else f"{r['fine_yuan']:,.2f} 元"
        click.echo(
            f"{r['id']:>6}  {r['case_no']:22} {r['status']:9} {r['violations']:>3}  "
            f"{r['party_name']}  {r['decision_no'] or ''} {fine}"
        )
    click.echo(f"{len(rows)} of {total} cases")


@case_group.command("show")
@click.argument("case")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@pass_ctx
def show_cmd(mctx, case, as_json) -> None:
    """One case: the party, facts, legal basis, penalty, its violations and history."""
    from credit.cases import case_events, case_violations, get_case

    def work(cur):
        case_id = _resolve(cur, case)
        found = get_case(cur, case_id)
        if found is None:
            raise click.ClickException(f"case {case} does not exist")
        return found, case_violations(cur, case_id), case_events(cur, case_id)

    found, violations, events = _run(mctx, work)
    if as_json:
        out = {"case": found, "violations": violations, "events": events}
        click.echo(json.dumps(out, ensure_ascii=False, indent=2, default=str))
        return
    for key in (
        "id case_no status party_kind party_name party_credit_code party_credit_code_valid "
        "legal_representative party_id_no driver_name penalty_category penalty_content "
        "fine_yuan decision_no decision_date authority_name authority_credit_code "
        "withdrawn_reason created_by created_at decided_at published_at closed_at "
        "withdrawn_at"
    ).split():
        click.echo(f"{key:24} {found.get(key)}")
    click.echo("facts:\n  " + found["facts"].replace("\n", "\n  "))
    click.echo("legal basis:\n  " + found["legal_basis"].replace("\n", "\n  "))
    click.echo("violations:")
    for v in violations:
        mark = "" if v["active"] else "  (released)"
        click.echo(f"  {v['id']:>7}  {v['plate']:9} {v['kind']:19} {v['status']}{mark}")
    click.echo("history:")
    for e in events:
        click.echo(f"  {e['at']}  {e['actor']:10} {e['action']:10} {e['note'] or ''}")


@case_group.command("notice")
@click.argument("case")
@click.argument("notice", type=click.Choice(tuple(NOTICES)))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="File (default: <no>.pdf)."
)
@_by
@pass_ctx
def notice_cmd(mctx, case, notice, out, by) -> None:
    """Write a notice as PDF: advance (行政处罚告知书) or decision (行政处罚决定书)."""
    from credit.cases import CaseError
    from credit.notices import render_notice

    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            case_id = _resolve(cur, case)
        conn.rollback()
        pdf = render_notice(conn, mctx.settings, case_id, notice, _actor(by))
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    out = out or Path(f"case-{case_id}-{notice}.pdf")
    out.write_bytes(pdf)
    click.echo(f"wrote {out} ({len(pdf):,} bytes)")


# ---- the violation commands that go through a case ----------------------------------------


@click.command("open-case")
@click.argument("violation_id", type=int)
@click.option("--decision-no", required=True, help="行政处罚决定书文号 (required).")
@click.option("--note", help="A note recorded with the change.")
@_by
@pass_ctx
def violation_open_case(mctx, violation_id, decision_no, note, by) -> None:
    """Open a one-violation case decided with this number (today); the full form is `muck
    case open` / `muck case decide`."""
    from credit.cases import get_case, open_case_for_violation

    case = _run(
        mctx,
        lambda cur: get_case(
            cur,
            open_case_for_violation(
                cur, mctx.settings, violation_id, _actor(by), decision_no, note
            ),
        ),
    )
    click.echo(f"violation {violation_id}: case_opened (case {case['case_no']}, decided)")


@click.command("close")
@click.argument("violation_id", type=int)
@click.option("--note", help="A note recorded with the change.")
@_by
@pass_ctx
def violation_close(mctx, violation_id, note, by) -> None:
    """Close the case the violation is in (all of its violations)."""
    from credit.cases import close_case_of_violation

    _run(mctx, lambda cur: close_case_of_violation(cur, violation_id, _actor(by), note))
    click.echo(f"violation {violation_id}: closed")
