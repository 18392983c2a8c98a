"""The dashboard and its provisioning, as Grafana and compose would read them (neither runs here;
the queries run against a real Prometheus in ``tests/integration/docker/test_dashboard.py``):
every panel reads the provisioned data source, panels do not overlap, every metric a query names
is one the services export, and compose mounts what the provisioning files point at."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "ipr-router.json"
PROVISIONING = DOCKER / "grafana" / "provisioning"
METRIC = re.compile(r"\b(ipr_[a-z_]+?)(?:_bucket|_count|_sum)?\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exported() -> set[str]:
    """Every metric name the product's code declares (a Counter's ``_total`` included)."""
    names: set[str] = set()
    for path in (ROOT / "streams").rglob("*.py"):
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*"
                                     r"f?\"(ipr_[a-z_{}]+)\"", path.read_text()):
            counter = kind == "Counter" and not name.endswith("_total")
            names.add(name + "_total" if counter else name)
    worker = ROOT / "streams" / "worker" / "stats.py"  # ipr_worker_{name}: one per counter
    for name in re.findall(r'^    "([a-z_]+)": "', worker.read_text(), flags=re.M):
        names.add(f"ipr_worker_{name}_total")
    return names


def test_every_panel_reads_the_provisioned_data_source():
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())[
        "datasources"]
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["datasource"] == {"type": source["type"], "uid": source["uid"]}, p["title"]
        assert p["targets"] and p["description"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]


def test_panels_do_not_overlap_on_the_grid():
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_metric_a_query_names_is_exported():
    named = {m for p in dashboard()["panels"] for t in p["targets"]
             for m in METRIC.findall(t["expr"])}
    assert "ipr_router_routed_total" in named  # the queries are read
    assert named - exported() == set()


def test_compose_mounts_what_the_provisioning_reads():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "ipr-router.yaml").read_text())[
        "providers"]
    inside = {target: (DOCKER / source).resolve() for source, target in mounts.items()}
    assert inside[provider["options"]["path"]] == DASHBOARD.parent
    assert inside["/etc/grafana/provisioning"] == PROVISIONING
    prometheus = dict(v.split(":")[:2] for v in compose["prometheus"]["volumes"])
    assert prometheus["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    scraped = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    assert {s["job_name"] for s in scraped} <= set(compose)  # each job is a compose service
