"""`muck case …` and the violation commands that go through a case, as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.credit.test_cases import fleet, statuses  # noqa: F401

MUCK = str(Path(sys.executable).with_name("muck"))


def test_case_commands(db, settings, fleet, tmp_path):  # noqa: F811
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": settings.database_url}

    def muck(*args):
        return subprocess.run([MUCK, *args], capture_output=True, text=True, env=env, timeout=120)

    v = fleet["v"]
    refused = muck("case", "open", str(v["speed"]), str(v["other"]))
    assert refused.returncode == 1 and "belong to different companies" in refused.stderr
    assert "Traceback" not in refused.stderr
    opened = muck("case", "open", str(v["speed"]), str(v["unsealed"]), "--by", "li")
    assert opened.returncode == 0, opened.stderr
    case_no = opened.stdout.split()[2].rstrip(":")
    assert case_no.startswith("示城管立〔") and "深圳市甲运输有限公司" in opened.stdout
    bad = muck("case", "decide", case_no, "--penalty-category", "罚款", "--fine", "lots")
    assert bad.returncode == 1 and "not an amount" in bad.stderr and "(fine_yuan)" in bad.stderr
    decided = muck("case", "decide", case_no, "--penalty-category", "罚款", "--fine", "5000")
    assert decided.returncode == 0 and "罚决〔" in decided.stdout, decided.stderr
    assert muck("case", "publish", case_no).returncode == 0
    shown = muck("case", "show", case_no)
    assert "published" in shown.stdout and "5000.00" in shown.stdout and "粤B10002" in shown.stdout
    out = tmp_path / "decision.pdf"
    notice = muck("case", "notice", case_no, "decision", "--out", str(out))
    assert notice.returncode == 0 and out.read_bytes().startswith(b"%PDF"), notice.stderr
    assert muck("case", "withdraw", case_no).returncode == 2  # --reason is required
    assert muck("case", "withdraw", case_no, "--reason", "复议撤销").returncode == 0
    assert {s for s, _ in statuses(db, [v["speed"], v["unsealed"]]).values()} == {"confirmed"}
    listed = muck("case", "list", "--status", "withdrawn")
    assert case_no in listed.stdout and "1 of 1 cases" in listed.stdout
    assert muck("case", "show", "no-such-case").returncode == 1
    # the violation's one-step commands
    one = muck("violations", "open-case", str(v["other"]), "--decision-no", "乙罚〔2026〕1号")
    assert one.returncode == 0 and "decided" in one.stdout, one.stderr
    assert statuses(db, [v["other"]])[v["other"]] == ("case_opened", "乙罚〔2026〕1号")
    assert muck("violations", "close", str(v["other"])).returncode == 0
    assert statuses(db, [v["other"]])[v["other"]][0] == "closed"
    dismiss = muck("violations", "dismiss", str(v["other"]), "--note", "x")
    assert dismiss.returncode == 1 and "withdraw the case first" in dismiss.stderr
