"""The monitoring profile must watch what the service exports: every metric its dashboard and alert rules name is one
that /metrics renders, its images are pinned, and the files compose mounts exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.generator.api.middleware import API_REGISTRY
from services.generator.stats import SnapshotCollector

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARD = json.loads((MONITORING / "grafana" / "dashboards" / "gift-generator.json").read_text())
ALERTS = yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name /metrics can render: the service's families (from one snapshot) and the API's own."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector({}, {"tinyworld": 1}, 3, 1, 12.5, (100, 1000), 0.9))
    text = (generate_latest(registry) + generate_latest(API_REGISTRY)).decode()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def named(expression: str) -> set[str]:
    return set(re.findall(r"\bgift_[a-z_]+\b", expression))


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]


def alert_rules() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in ALERTS["groups"] for rule in group["rules"]}


def test_the_dashboard_names_only_exported_metrics_and_shows_each_family():
    names = {name for expression in dashboard_expressions() for name in named(expression)}
    assert names and names <= exported(), names - exported()
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in exported()}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in names}
    assert families <= shown, f"exported but on no panel: {sorted(families - shown)}"


def test_the_alert_rules_name_only_exported_metrics_and_cover_the_four_conditions():
    rules = alert_rules()
    assert set(rules) == {
        "GiftNoLiveWorker",
        "GiftOldestQueuedJobTooOld",
        "GiftRedisAboveAdmissionMark",
        "GiftWebhooksGivenUp",
    }
    for alert, expression in rules.items():
        assert named(expression) and named(expression) <= exported(), (alert, named(expression) - exported())


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_the_monitoring_services_are_pinned_in_their_profile_and_mount_files_that_exist(service):
    spec = SERVICES[service]
    assert spec["profiles"] == ["monitoring"]
    assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", spec["image"]), spec["image"]
    for volume in spec["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), volume


def test_prometheus_scrapes_the_api_and_loads_the_rules():
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["generator-api:8000"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
