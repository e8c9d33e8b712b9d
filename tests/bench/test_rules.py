"""`muck bench rules`: the figures docs/performance.md quotes come from a working benchmark."""

from __future__ import annotations

import re

from bench.rules import run_rules_bench


def test_city_workload_measures_both_paths_and_reports_medians(settings):
    report = run_rules_bench(
        settings, trucks=200, rounds=1, polygons=0, routes=1, workload="city", minutes=2, repeat=2
    )
    assert report.count("ingest without rules:") == 2
    assert report.count("ingest with rules   :") == 2
    fixes = {int(n) for n in re.findall(r"rules\s*: (\d+) fixes", report)}
    assert len(fixes) == 1 and fixes.pop() > 2000, report  # both paths stored the same fixes
    median = re.search(r"median of 2: ingest without rules ([\d.]+) µs/fix CPU; rules add", report)
    assert median and float(median.group(1)) > 0, report
    assert "\nviolations raised: " in report, report
