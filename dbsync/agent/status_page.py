"""``GET /``: the agent's status as one HTML page a person reads at a glance.

Pure: ``render_page`` turns what the agent read (the ``status --json`` document, the agent's
health, the history, the recent losing versions) into a page. Everything is inline — styles,
the chart (SVG drawn here), no script, no external font or image — so the page works offline,
behind a firewall, and from a file saved to disk. Every value from the data is escaped.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from dbsync.edges.state import HistoryEntry, LosingVersion

REFRESH_SECONDS = 30
COLOURS = {"HEALTHY": "#1a7f37", "WARNING": "#9a6700", "DEGRADED": "#cf222e"}
OUTCOME_COLOURS = {
    "success": "#1a7f37",
    "dry-run": "#8c959f",
    "refused": "#bc4c00",
    "failed": "#cf222e",
    "interrupted": "#8250df",
    "running": "#0969da",
}
LANES = ("export", "merge", "import", "restore")


@dataclass(frozen=True)
class PageInput:
    status: Mapping[str, Any]
    """The document of ``dbsync status --json``."""
    history: Sequence[HistoryEntry]
    """Newest first, as the state store returns it."""
    conflicts: Sequence[LosingVersion]
    """The most recent losing versions, newest first."""
    now: datetime.datetime
    agent: Mapping[str, Any] = field(default_factory=dict)
    """The agent's ``/health`` document."""


def parse_time(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def ago(text: str | None, now: datetime.datetime) -> str:
    """``3 min ago``: what a person wants to know of a time on a status page."""
    if not text:
        return "never"
    seconds = int((now - parse_time(text)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _time(text: str | None, now: datetime.datetime) -> str:
    if not text:
        return '<span class="muted">never</span>'
    return f'<time datetime="{escape(text)}" title="{escape(text)}">{escape(ago(text, now))}</time>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """Cells are HTML already (escaped by the caller); an empty table is a sentence instead."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def reasons_section(status: Mapping[str, Any]) -> str:
    reasons = status.get("reasons", [])
    if not reasons:
        return '<p class="ok">Nothing to do: every check passed.</p>'
    items = "".join(
        f'<li class="reason {escape(r["level"]).lower()}"><strong>{escape(r["level"])}</strong> '
        f'<span class="check">{escape(r["check"])}</span> {escape(r["message"])}'
        f'<div class="fix">fix: <code>{escape(r["fix"])}</code></div></li>'
        for r in reasons
    )
    return f'<ul class="reasons">{items}</ul>'


def collections_section(status: Mapping[str, Any], now: datetime.datetime) -> str:
    rows = []
    for name, info in sorted(status.get("collections", {}).items()):
        export, merge = info.get("last_export") or {}, info.get("last_merge") or {}
        newest = max((export, merge), key=lambda run: run.get("time") or "")
        count = newest.get("records")
        failures = max(export.get("consecutive_failures", 0), merge.get("consecutive_failures", 0))
        rows.append(
            [
                f"<code>{escape(name)}</code>",
                '<span class="muted">-</span>' if count is None else f"{count:,}",
                _time(export.get("time"), now),
                _time(merge.get("time"), now),
                f'<span class="bad">{failures}</span>' if failures else "0",
            ]
        )
    headers = (
        "collection",
        "records at last run",
        "last export",
        "last merge",
        "failures in a row",
    )
    return _table(headers, rows, "No collection exported or merged yet.")


def pending_section(status: Mapping[str, Any], now: datetime.datetime) -> str:
    rows = [
        [
            str(p.get("id", "")),
            f"<code>{escape(str(p.get('source', '')))}</code>",
            _time(p.get("created"), now),
            str(p.get("attempts", 0)),
            escape(p.get("last_error") or ""),
        ]
        for p in status.get("pending_merges", [])
    ]
    headers = ("id", "source", "queued", "attempts", "last error")
    return _table(headers, rows, "No merge is waiting.")


def conflicts_section(conflicts: Sequence[LosingVersion], now: datetime.datetime) -> str:
    rows = [
        [
            _time(c.time, now),
            f"<code>{escape(c.collection)}</code>",
            f"<code>{escape(_shorten(c.key, 60))}</code>",
            escape(c.rule),
            escape(f"{c.place} on {c.asset}"),
        ]
        for c in conflicts
    ]
    headers = ("when", "collection", "key", "decided by", "where")
    return _table(headers, rows, "No conflict decided yet.")


def runs_section(history: Sequence[HistoryEntry], now: datetime.datetime) -> str:
    rows = [
        [
            _time(e.time, now),
            escape(e.operation),
            f"<code>{escape(e.collection or '-')}</code>",
            _outcome(e.status),
            "" if e.records is None else f"{e.records:,}",
            "" if e.duration_ms is None else f"{e.duration_ms:,} ms",
            escape(_shorten(e.error or "", 80)),
        ]
        for e in history
    ]
    headers = ("when", "operation", "collection", "outcome", "records", "took", "error")
    return _table(headers, rows, "No run recorded yet.")


def agent_section(agent: Mapping[str, Any], now: datetime.datetime) -> str:
    if not agent:
        return ""
    last = agent.get("last_cycle") or {}
    facts = [
        ("cycles", str(agent.get("cycles", 0))),
        ("failures in a row", str(agent.get("consecutive_failures", 0))),
        ("last cycle", _time(last.get("time"), now) + _outcome_suffix(last.get("outcome"))),
        ("syncing now", "yes" if agent.get("syncing") else "no"),
        ("up for", escape(_duration(int(agent.get("uptime_seconds", 0))))),
    ]
    if last.get("error"):  # what failed, beside the count: the Health section has the fix
        facts.append(
            ("last error", f'<span class="bad">{escape(_shorten(last["error"], 160))}</span>')
        )
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{v}</dd></div>" for k, v in facts)
    return f'<dl class="facts">{cells}</dl>'


def _outcome_suffix(outcome: str | None) -> str:
    return f" ({_outcome(outcome)})" if outcome else ""


def _outcome(status: str) -> str:
    colour = OUTCOME_COLOURS.get(status, "#57606a")
    return f'<span class="outcome" style="color:{colour}">{escape(status)}</span>'


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- the chart


def history_chart(history: Sequence[HistoryEntry], now: datetime.datetime) -> str:
    """Every run as a dot on a time line, one lane per operation, coloured by outcome."""
    runs = [(parse_time(e.time), e) for e in history]
    if not runs:
        return '<p class="muted">The chart appears after the first run.</p>'
    width, left, right, top, lane_height = 900, 70, 20, 10, 34
    present = {e.operation for _, e in runs}
    lanes = [lane for lane in LANES if lane in present] + sorted(present - set(LANES))
    height = top + lane_height * len(lanes) + 44
    start = min(moment for moment, _ in runs)
    span = max((now - start).total_seconds(), 60.0)

    def x(moment: datetime.datetime) -> float:
        return left + (width - left - right) * (moment - start).total_seconds() / span

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="sync history: {len(runs)} runs since {escape(start.isoformat())}">'
    ]
    for index, lane in enumerate(lanes):
        y = top + lane_height * index + lane_height / 2
        parts.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" class="lane">'
            f"{escape(lane)}</text>"
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        )
    for moment, entry in sorted(runs, key=lambda run: run[0]):
        y = top + lane_height * lanes.index(entry.operation) + lane_height / 2
        colour = OUTCOME_COLOURS.get(entry.status, "#57606a")
        label = f"{entry.time} {entry.operation} {entry.collection or ''} {entry.status}"
        parts.append(
            f'<circle cx="{x(moment):.1f}" cy="{y:.1f}" r="6" fill="{colour}" '
            f'fill-opacity="0.8"><title>{escape(label)}</title></circle>'
        )
    axis_y = top + lane_height * len(lanes) + 18
    shape = "%H:%M:%S" if span < 3600 else "%H:%M" if span < 86400 else "%d %b %H:%M"
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        moment = start + datetime.timedelta(seconds=span * fraction)
        anchor = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        parts.append(
            f'<text x="{x(moment):.1f}" y="{axis_y}" text-anchor="{anchor}" class="axis">'
            f"{escape(moment.strftime(shape))}</text>"
        )
    parts.append(
        f'<text x="{width - right}" y="{axis_y + 4}" class="axis" text-anchor="end" dy="12">'
        "UTC</text></svg>"
    )
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{escape(outcome)}</span>'
        for outcome, colour in OUTCOME_COLOURS.items()
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


# ---------------------------------------------------------------- the page

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: #f6f8fa; color: #1f2328; }
header { padding: 18px 28px; color: #fff; display: flex; align-items: baseline; gap: 18px;
         flex-wrap: wrap; }
header h1 { margin: 0; font-size: 30px; letter-spacing: .04em; }
header .who { font-size: 15px; opacity: .95; }
main { padding: 8px 28px 28px; max-width: 1100px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; margin: 16px 0;
          padding: 14px 18px; }
h2 { font-size: 17px; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid #eaeef2;
         vertical-align: top; }
th { color: #57606a; font-weight: 600; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color: #6e7781; }
.ok { color: #1a7f37; font-weight: 600; margin: 0; }
.bad { color: #cf222e; font-weight: 600; }
.reasons { list-style: none; padding: 0; margin: 0; }
.reason { padding: 8px 12px; border-left: 4px solid; margin-bottom: 8px; background: #f6f8fa; }
.reason.warning { border-color: #9a6700; } .reason.degraded { border-color: #cf222e; }
.reason .check { color: #57606a; font-size: 13px; margin: 0 6px; }
.fix { margin-top: 3px; color: #57606a; }
.facts { display: flex; gap: 28px; flex-wrap: wrap; margin: 0; }
.facts dt { color: #57606a; font-size: 13px; } .facts dd { margin: 0; font-weight: 600; }
.chart { width: 100%; height: auto; }
.chart .lane, .chart .axis { font-size: 13px; fill: #57606a; }
.chart .grid { stroke: #eaeef2; }
.legend { display: flex; gap: 16px; font-size: 13px; color: #57606a; flex-wrap: wrap; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
            margin-right: 5px; }
footer { color: #6e7781; font-size: 13px; }
"""


def render_page(data: PageInput) -> str:
    status = data.status
    level = str(status.get("status", "UNKNOWN"))
    colour = COLOURS.get(level, "#57606a")
    who = f"asset {status.get('asset') or '?'} · database {status.get('database') or '?'}"
    recent = list(data.history[:12])
    sections = [
        ("Health", reasons_section(status)),
        ("Agent", agent_section(data.agent, data.now)),
        ("Collections", collections_section(status, data.now)),
        ("Sync history", history_chart(data.history, data.now)),
        ("Pending merges", pending_section(status, data.now)),
        ("Recent conflicts", conflicts_section(data.conflicts, data.now)),
        ("Recent runs", runs_section(recent, data.now)),
    ]
    body = "".join(
        f'<section id="{escape(title.lower().replace(" ", "-"))}"><h2>{escape(title)}</h2>'
        f"{content}</section>"
        for title, content in sections
        if content
    )
    generated = data.now.isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>dbsync {escape(level)} · {escape(str(status.get('asset') or ''))}</title>"
        f"<style>{STYLE}</style></head><body>"
        f'<header style="background:{colour}"><h1 class="status">{escape(level)}</h1>'
        f'<span class="who">{escape(who)}</span></header>'
        f"<main>{body}<footer>Generated {escape(generated)}; refreshes every "
        f"{REFRESH_SECONDS} s. The same as JSON: <code>/status</code>, <code>/history</code>, "
        "<code>/pending</code>; metrics: <code>/metrics</code>.</footer></main></body></html>\n"
    )
