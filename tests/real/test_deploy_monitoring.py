"""Monitoring deploy files: alert rules, their promtool unit tests, the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"

# The metrics riskaudit exports (its contract with these files).
COUNTERS = {
    "audit_events_total",
    "audit_write_failures_total",
    "audit_events_emergency_total",
    "audit_events_dropped_total",
    "audit_bytes_written_total",
    "audit_bus_slo_violations_total",
    "audit_rotations_total",
    "audit_reopens_total",
    "audit_truncations_total",
    "audit_backup_failures_total",
    "audit_forward_errors_total",
    "audit_forward_records_total",
}
GAUGES = {
    "audit_fallback_active",
    "audit_queue_depth",
    "audit_queue_capacity",
    "audit_chain_seq",
    "audit_durable_seq",
    "audit_checkpoint_age_seconds",
    "audit_volume_free_bytes",
    "audit_volume_size_bytes",
    "audit_spool_records",
    "audit_clock_max_error_seconds",
    "audit_clock_synchronized",
    "audit_last_event_timestamp_seconds",
    "audit_ready",
    "audit_bus_latency_seconds",
    "audit_backup_last_success_timestamp_seconds",
    "audit_forward_lag_records",
    "audit_forward_replicated_seq",
    "audit_forward_replication_lag_records",
    "audit_forward_replication_lag_seconds",
    "audit_primary_trusted",
    "audit_untrusted_files",
    "audit_corrupt_files",
    "audit_unrecovered_records",
    "audit_log_file_bytes",
    "riskaudit_build_info",
}
HISTOGRAMS = {"audit_append_seconds", "audit_durable_latency_seconds", "audit_fsync_seconds"}
# Series from elsewhere that the rules and the dashboard may use.
NODE_EXPORTER = {"node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
# prometheus-client's standard process collector, registered in the service's registry.
PROCESS = {"process_resident_memory_bytes", "process_open_fds", "process_max_fds"}
BUILT_IN = {"up"}
KNOWN_SERIES = frozenset(
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | NODE_EXPORTER
    | PROCESS
    | BUILT_IN
)

REQUIRED_ALERTS = {
    "AuditLogWriteFailure",
    "AuditLogVolumeSpace",
    "AuditLogVolumeSpaceNode",
    "AuditEventsDropped",
    "AuditEmergencyPath",
    "AuditFallbackActive",
    "AuditCheckpointStale",
    "AuditClockUnsynchronized",
    "AuditQueueSaturated",
    "AuditDurableLatencyHigh",
    "AuditProducerSilent",
    "AuditLogTruncated",
    "AuditBackupStale",
    "AuditForwardLagHigh",
}

# Grafana's own variables, replaced by values of the right kind; any other variable
# (`$job`, `${instance}`, `[[job]]`) becomes a plain word, valid in `=` and `=~`.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def rule_test_files() -> list[Path]:
    return sorted([*RULE_TESTS.glob("*.yml"), *RULE_TESTS.glob("*.yaml")])


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; skipped without it, except on CI where it must be there."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not found: install Debian's `prometheus` package (make system-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the monitoring checks")
        pytest.skip(reason)
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


# --- reading the deploy files (YAML read line by line: PyYAML is not a test dependency) -


def yaml_values(text: str, key: str) -> list[str]:
    """The value of every `key:` in a block-style YAML file: a plain or quoted scalar on
    the key's line, or a `|`/`>` block scalar (its lines joined by newlines, which
    PromQL reads like spaces)."""
    key_line = re.compile(rf"^(\s*(?:-\s+)?){re.escape(key)}:(?:\s+(.*?))?\s*$")
    lines = text.splitlines()
    values = []
    for i, line in enumerate(lines):
        m = key_line.match(line)
        if m is None:
            continue
        column, value = len(m.group(1)), m.group(2) or ""
        if value == "" or re.fullmatch(r"[|>][+-]?", value):
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= column:
                    break
                block.append(following.strip())
            value = "\n".join(block).strip()
        elif value.startswith("'"):
            assert value.endswith("'"), f"multi-line quoted {key}: {line!r}"
            value = value[1:-1].replace("''", "'")
        elif value.startswith('"'):
            value = json.loads(value)
        else:
            value = re.sub(r"\s+#.*$", "", value)
        values.append(value)
    return values


def rule_blocks(text: str, kinds: tuple[str, ...] = ("alert", "record")) -> dict[str, str]:
    """Each rule's name and its text, from `- alert:` (or `- record:`) to the next rule."""
    starts = [m.start() for m in re.finditer(r"^\s*- (?:alert|record):", text, re.M)]
    blocks = {}
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        block = text[start:end]
        m = re.match(r"\s*- (alert|record):\s*(\S+)", block)
        if m and m.group(1) in kinds:
            blocks[m.group(2)] = block
    return blocks


def alert_blocks(text: str) -> dict[str, str]:
    return rule_blocks(text, ("alert",))


def unit_test_outcomes(text: str) -> Iterator[tuple[str, bool]]:
    """(alertname, expected to fire) for every `alert_rule_test` item of a promtool test
    file; an empty or missing `exp_alerts` means it must not fire."""
    item_start = re.compile(r"^\s*-\s+(?:eval_time|alertname|exp_alerts):")
    items: list[list[str]] = []
    for line in text.splitlines():
        if item_start.match(line):
            items.append([])
        if items:
            items[-1].append(line)
    for item in items:
        body = "\n".join(item)
        name = re.search(r"^\s*(?:-\s+)?alertname:\s*['\"]?(\w+)", body, re.M)
        if name is None:
            continue
        exp = re.search(r"^\s*(?:-\s+)?exp_alerts:\s*(.*)$", body, re.M)
        if exp is None:
            fires = False
        elif inline := exp.group(1).strip():
            fires = inline != "[]"
        else:  # a block list follows
            fires = bool(re.search(r"^\s*-\s+exp_", body[exp.end() :], re.M))
        yield name.group(1), fires


def walk_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    rows = dashboard.get("rows", [])  # pre-5.0 layout, in case
    return list(walk_panels([*dashboard.get("panels", []), *rows]))


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    queries = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
                queries.append((where, target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        # label_values(<selector>, <label>) and query_result(<expr>) hold PromQL
        selector = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", query, re.S)
        inner = selector or re.fullmatch(r"\s*query_result\((.+)\)\s*", query, re.S)
        if inner:
            queries.append((f"variable {var['name']}", inner.group(1)))
    return queries


def grafana_to_promql(expr: str) -> str:
    """The query with Grafana's variables replaced by concrete values."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA_BUILTINS.get(name, "riskaudit")

    return GRAFANA_VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, labels (in matchers and by/without/on/ignoring/group_* lists) or durations."""
    names = set(re.findall(r"__name__\s*=\s*\"([^\"]+)\"", expr))
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"#[^\n]*", "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for m in re.finditer(r"(?<![\w.:])[a-zA-Z_:][\w:]*", expr):
        name = m.group(0)
        if name.lower() in PROMQL_KEYWORDS or expr[m.end() :].lstrip().startswith("("):
            continue
        names.add(name)
    return names


def rule_expressions() -> list[tuple[str, str]]:
    """(rule name, PromQL) for every alerting and recording rule in rules.yml."""
    exprs = []
    for name, block in rule_blocks(RULES.read_text(encoding="utf-8")).items():
        (expr,) = yaml_values(block, "expr")
        exprs.append((name, expr))
    assert exprs, "rules.yml has no rules"
    return exprs


# --- promtool ---------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    """`promtool check rules` parses every rule and expression in rules.yml."""
    result = run_promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", rule_test_files(), ids=lambda p: p.name)
def test_alert_rule_unit_tests_pass(promtool: str, test_file: Path) -> None:
    """Each alert fires (exact labels, annotations) where it should, and only there."""
    result = run_promtool(promtool, "test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query (nested rows, variables too) parses as PromQL in promtool."""
    queries = dashboard_queries(load_dashboard())
    assert queries, "the dashboard has no queries"
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(queries)
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    # JSON is YAML: no quoting rules to get wrong.
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", rules_file)
    index = "\n".join(f"dashboard:query_{i} = {where}" for i, (where, _) in enumerate(queries))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{index}"


# --- structure, without promtool --------------------------------------------------------


def test_rules_define_the_required_alerts_with_severity_and_runbook() -> None:
    """Every required alert exists, with `for`, severity and a runbook-pointing text."""
    text = RULES.read_text(encoding="utf-8")
    assert re.search(r"^\s*- name:\s*riskaudit\s*$", text, re.M)
    blocks = alert_blocks(text)
    assert blocks.keys() >= REQUIRED_ALERTS, REQUIRED_ALERTS - blocks.keys()
    for name, block in blocks.items():
        assert re.search(r"^\s+for:\s*\d+[smh]\s*$", block, re.M), f"{name}: no `for`"
        assert re.search(r"^\s+severity:\s*(critical|warning)\s*$", block, re.M), name
        assert yaml_values(block, "summary"), f"{name}: no summary"
        (description,) = yaml_values(block, "description")
        assert "docs/operations.md" in description, f"{name}: no runbook pointer"


def test_alerts_keep_the_agreed_expressions() -> None:
    """The alerts that other teams rely on keep their exact conditions."""
    exprs = dict(rule_expressions())
    assert exprs["AuditLogWriteFailure"] == "increase(audit_write_failures_total[5m]) > 0"
    assert exprs["AuditEventsDropped"] == "increase(audit_events_dropped_total[5m]) > 0"
    assert exprs["AuditLogVolumeSpace"] == (
        "audit_volume_free_bytes / audit_volume_size_bytes < 0.10"
    )
    assert 'mountpoint=~".*riskaudit.*|/var/log.*"' in exprs["AuditLogVolumeSpaceNode"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """No alert lacks a unit test where it fires and one where it must stay quiet."""
    files = rule_test_files()
    assert files, f"no promtool unit tests in {RULE_TESTS}"
    outcomes = [o for f in files for o in unit_test_outcomes(f.read_text(encoding="utf-8"))]
    for name in alert_blocks(RULES.read_text(encoding="utf-8")):
        assert (name, True) in outcomes, f"{name}: no test where it fires"
        assert (name, False) in outcomes, f"{name}: no test where it must not fire"


def test_dashboard_is_valid_grafana_json() -> None:
    """dashboard.json is a Grafana dashboard whose panels all query ${DS_PROMETHEUS}."""
    dashboard = load_dashboard()
    assert dashboard["title"] and dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target.get("expr"), f"{panel['title']}: target {target.get('refId')}"
    exprs = " ".join(expr for _, expr in dashboard_queries(dashboard))
    for must_show in (
        "audit_events_total",
        "audit_volume_size_bytes",
        "audit_write_failures_total",
        "audit_fallback_active",
        "audit_durable_latency_seconds_bucket",
        "audit_queue_capacity",
        "audit_checkpoint_age_seconds",
        "audit_clock_max_error_seconds",
        "audit_clock_synchronized",
        "audit_events_emergency_total",
        "audit_events_dropped_total",
        "audit_log_file_bytes",
    ):
        assert must_show in exprs, f"the dashboard does not show {must_show}"


def test_rules_and_dashboard_use_only_contract_metrics() -> None:
    """Alerts and dashboard use only contract metric names, so a typo cannot slip in."""
    used = [*rule_expressions(), *dashboard_queries(load_dashboard())]
    unknown = {
        (where, name)
        for where, expr in used
        for name in metric_names(grafana_to_promql(expr))
        if name not in KNOWN_SERIES
    }
    assert not unknown, f"metrics outside the contract: {sorted(unknown)}"
    assert {n for _, e in used for n in metric_names(e)} >= {"audit_events_total", "up"}


def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    """The name check finds metrics (and typos), not functions, labels or durations."""
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(audit_fsync_seconds_bucket{job=~"a|b"}'
        "[5m] offset 1h))) > 0.1 and on (job) group_left (instance) audit_ready == 0 or "
        'label_replace(audit_evnets_total, "x", "$1", "job", "(.*)") unless '
        '{__name__="audit_queue_depth"} or max_over_time(up[1h:1m]) > 1e3'
    )
    assert metric_names(expr) == {
        "audit_fsync_seconds_bucket",
        "audit_ready",
        "audit_evnets_total",
        "audit_queue_depth",
        "up",
    }
    assert grafana_to_promql("rate(x{job=~\"$job\",i=~'${instance:regex}'}[$__rate_interval])") == (
        "rate(x{job=~\"riskaudit\",i=~'riskaudit'}[5m])"
    )
