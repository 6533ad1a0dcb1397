"""``GET /metrics``: the asset's history in the Prometheus exposition format.

Built on each scrape from what the state store keeps (the history, each collection's last
success, the pending merges, the losing versions) rather than from counters in the agent's
memory, so runs made outside the agent (a push's hook, ``dbsync merge`` by hand) count too and a
restarted agent loses nothing. ``prometheus_client`` writes the format; nothing here is
hand-formatted.
"""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dbsync.edges.state import CollectionState, HistoryEntry

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
"""Seconds: a small collection's export takes a tenth of a second, a million records minutes."""


@dataclass(frozen=True)
class MetricsInput:
    """What a scrape reads, gathered by the agent from the state store."""

    history: Sequence[HistoryEntry]
    collections: Sequence[CollectionState]
    pending_merges: int
    conflicts_decided: Mapping[str, int]
    """Losing versions recorded per collection."""
    agent: Mapping[str, Any] = field(default_factory=dict)
    """The agent's own ``/health`` document (cycles, consecutive failures), if any."""


def epoch_seconds(text: str) -> float:
    """A state time (ISO-8601, UTC) as Unix seconds, what Prometheus expects for timestamps."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def runs_total(history: Sequence[HistoryEntry]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "dbsync_runs",
        "Runs per operation and outcome, one per collection and attempt, over the kept history.",
        labels=["operation", "outcome"],
    )
    counted = Counter((entry.operation, entry.status) for entry in history)
    for (operation, outcome), count in sorted(counted.items()):
        family.add_metric([operation, outcome], count)
    return family


def run_durations(history: Sequence[HistoryEntry]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "dbsync_run_duration_seconds",
        "How long runs took, per operation, over the kept history.",
        labels=["operation"],
    )
    durations: dict[str, list[float]] = defaultdict(list)
    for entry in history:
        if entry.duration_ms is not None:
            durations[entry.operation].append(entry.duration_ms / 1000)
    for operation, values in sorted(durations.items()):
        buckets = [
            (str(bound), float(sum(v <= bound for v in values))) for bound in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([operation], buckets, sum_value=sum(values))
    return family


def last_success(collections: Sequence[CollectionState]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dbsync_last_success_timestamp_seconds",
        "When each collection's export or merge last succeeded (Unix time).",
        labels=["collection", "operation"],
    )
    for row in collections:
        if row.last_success:
            family.add_metric([row.collection, row.operation], epoch_seconds(row.last_success))
    return family


def records(collections: Sequence[CollectionState]) -> GaugeMetricFamily:
    """The newest success of either operation says how many records the collection holds."""
    family = GaugeMetricFamily(
        "dbsync_records",
        "Records per collection at its last successful export or merge.",
        labels=["collection"],
    )
    newest: dict[str, CollectionState] = {}
    for row in collections:
        if row.last_success is None or row.last_records is None:
            continue
        known = newest.get(row.collection)
        if known is None or (known.last_success or "") < row.last_success:
            newest[row.collection] = row
    for name, row in sorted(newest.items()):
        family.add_metric([name], float(row.last_records or 0))
    return family


def failures(collections: Sequence[CollectionState]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "dbsync_consecutive_failures",
        "Failed or refused attempts in a row, per collection and operation.",
        labels=["collection", "operation"],
    )
    for row in collections:
        family.add_metric([row.collection, row.operation], float(row.consecutive_failures))
    return family


def conflicts(decided: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "dbsync_conflicts_decided",
        "Conflicts a rule decided, per collection (losing versions kept in the state).",
        labels=["collection"],
    )
    for name, count in sorted(decided.items()):
        family.add_metric([name], count)
    return family


def agent_families(agent: Mapping[str, Any]) -> Iterator[Metric]:
    if not agent:
        return
    yield CounterMetricFamily(
        "dbsync_agent_cycles", "Sync cycles this agent ran since it started.", value=agent["cycles"]
    )
    yield GaugeMetricFamily(
        "dbsync_agent_consecutive_failures",
        "Sync cycles of this agent that failed in a row.",
        value=agent["consecutive_failures"],
    )


@dataclass(frozen=True, eq=False)  # the registry keys collectors by identity
class _Snapshot(Collector):
    data: MetricsInput

    def collect(self) -> Iterator[Metric]:
        data = self.data
        yield runs_total(data.history)
        yield run_durations(data.history)
        yield last_success(data.collections)
        yield records(data.collections)
        yield failures(data.collections)
        yield GaugeMetricFamily(
            "dbsync_pending_merges",
            "Merges waiting in the pending queue (the database was unreachable).",
            value=data.pending_merges,
        )
        yield conflicts(data.conflicts_decided)
        yield from agent_families(data.agent)


def render_metrics(data: MetricsInput) -> bytes:
    """The exposition text of one scrape (a registry of its own: no process-wide metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(data))
    return generate_latest(registry)
