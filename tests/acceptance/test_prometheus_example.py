"""examples/prometheus runs, serves backfill_sa's metrics, and its alert rules use them."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import REPO, base_env

ALERTS = REPO / "examples" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_scope")}
            samples[(sample.name, frozenset(labels.items()))] = sample.value
    return samples


def test_the_example_serves_metrics_the_alert_rules_use(fresh_database: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.prometheus.app", "--port", str(port)],
        cwd=REPO,
        env=base_env(fresh_database),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(120, proc.kill)  # a hung example fails, never blocks CI
    watchdog.start()
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # printed once the jobs have settled
        assert ready.strip() == f"serving metrics at http://127.0.0.1:{port}/metrics", (
            proc.stderr.read() if proc.stderr else ""
        )
        samples = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        finally:
            watchdog.cancel()
    assert code == 0

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    common = {"queue": "bulk"}
    assert value("backfill_jobs_enqueued_total", task="resize", outcome="inserted", **common) == 20
    assert value("backfill_jobs_succeeded_total", task="flaky", **common) == 3
    assert value("backfill_jobs_retried_total", task="flaky", **common) == 3
    assert (
        value(
            "backfill_jobs_dead_lettered_total", task="charge", reason="permanent_error", **common
        )
        == 2
    )
    assert value("backfill_queue_jobs", state="scheduled", **common) == 5
    assert value("backfill_dlq_jobs", **common) == 2
    assert value("backfill_queue_oldest_available_age_seconds", **common) == 0
    assert value("backfill_workers_live") == 1
    assert value("backfill_db_operation_duration_seconds_count", operation="claim") >= 1

    # Every metric an alert rule reads is one the example exports.
    expressions = re.findall(r"^\s+expr: (.+)$", ALERTS.read_text(), flags=re.M)
    used = {name for expr in expressions for name in re.findall(r"\bbackfill_[a-z_]+", expr)}
    exported = {name for name, _ in samples}
    assert used == {
        "backfill_queue_oldest_available_age_seconds",
        "backfill_jobs_dead_lettered_total",
        "backfill_workers_live",
    }
    assert used <= exported


def test_the_alert_rules_name_the_three_alerts() -> None:
    text = ALERTS.read_text()
    assert re.findall(r"^\s+- alert: (\w+)$", text, flags=re.M) == [
        "BackfillQueueBackingUp",
        "BackfillJobsDeadLettering",
        "BackfillNoLiveWorkers",
    ]
    assert re.findall(r"^\s+expr: (.+)$", text, flags=re.M) == [
        "max by (queue) (backfill_queue_oldest_available_age_seconds) > 300",
        "sum by (task, queue, reason) (increase(backfill_jobs_dead_lettered_total[15m])) > 0",
        "absent(backfill_workers_live) or max(backfill_workers_live) < 1",
    ]
