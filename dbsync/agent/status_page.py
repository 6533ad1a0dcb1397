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
    """Cells are HTML already (escaped by the caller); an empty table is a sentence instead.
    The table scrolls inside its card on a narrow screen rather than widen the page."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


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
            _long(p.get("last_error") or ""),
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
            _long(_shorten(e.error or "", 80)),
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


def _long(text: str) -> str:
    """A sentence in a table cell: it wraps in a column of its own width, where the other
    cells keep to one line (and the table scrolls sideways on a narrow screen)."""
    return f'<span class="long">{escape(text)}</span>' if text else ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- the chart


def history_chart(history: Sequence[HistoryEntry], now: datetime.datetime) -> str:
    """Every run as a dot on a time line, one lane per operation, coloured by outcome.

    Drawn at the page's own scale, as wide as its card: the dots and ticks are placed in
    percent of the width and the text keeps its size, so the chart reads on a phone as on a
    desktop (a viewBox scaled to a 390 px screen would shrink its labels to 5 px). Each lane's
    name sits above its line, so the time line has the whole width; on a narrow screen the
    style hides the ticks between the first, the middle and the last.
    """
    runs = [(parse_time(e.time), e) for e in history]
    if not runs:
        return '<p class="muted">The chart appears after the first run.</p>'
    margin, top, lane_height = 2.5, 4, 40
    present = {e.operation for _, e in runs}
    lanes = [lane for lane in LANES if lane in present] + sorted(present - set(LANES))
    axis_y = top + lane_height * len(lanes) + 14
    height = axis_y + 22
    start = min(moment for moment, _ in runs)
    span = max((now - start).total_seconds(), 60.0)

    def x(moment: datetime.datetime) -> str:
        return f"{margin + (100 - 2 * margin) * (moment - start).total_seconds() / span:.2f}%"

    def line_y(lane: str) -> int:
        return top + lane_height * lanes.index(lane) + 28

    parts = [
        f'<svg class="chart" width="100%" height="{height}" role="img" '
        f'aria-label="sync history: {len(runs)} runs since {escape(start.isoformat())}">'
    ]
    for lane in lanes:
        parts.append(
            f'<text x="{margin}%" y="{line_y(lane) - 14}" class="lane">{escape(lane)}</text>'
            f'<line x1="{margin}%" x2="{100 - margin}%" y1="{line_y(lane)}" '
            f'y2="{line_y(lane)}" class="grid"/>'
        )
    for moment, entry in sorted(runs, key=lambda run: run[0]):
        colour = OUTCOME_COLOURS.get(entry.status, "#57606a")
        label = f"{entry.time} {entry.operation} {entry.collection or ''} {entry.status}"
        parts.append(
            f'<circle cx="{x(moment)}" cy="{line_y(entry.operation)}" r="6" fill="{colour}" '
            f'fill-opacity="0.8"><title>{escape(label)}</title></circle>'
        )
    shape = "%H:%M:%S" if span < 3600 else "%H:%M" if span < 86400 else "%d %b %H:%M"
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        moment = start + datetime.timedelta(seconds=span * fraction)
        anchor = "start" if fraction == 0 else "end" if fraction == 1 else "middle"
        kind = "axis minor" if fraction in (0.25, 0.75) else "axis"
        parts.append(
            f'<text x="{x(moment)}" y="{axis_y}" text-anchor="{anchor}" class="{kind}">'
            f"{escape(moment.strftime(shape))}</text>"
        )
    parts.append(
        f'<text x="{100 - margin}%" y="{axis_y + 16}" class="axis" text-anchor="end">'
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
.scroll { overflow-x: auto; }
.scroll th, .scroll td { white-space: nowrap; }
.long { display: inline-block; min-width: 16em; white-space: normal; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid #eaeef2;
         vertical-align: top; }
th { color: #57606a; font-weight: 600; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color: #6e7781; }
.ok { color: #1a7f37; font-weight: 600; margin: 0; }
.bad { color: #cf222e; font-weight: 600; }
.reasons { list-style: none; padding: 0; margin: 0; }
.reason { padding: 8px 12px; border-left: 4px solid; margin-bottom: 8px; background: #f6f8fa;
          overflow-wrap: anywhere; }
.reason.warning { border-color: #9a6700; } .reason.degraded { border-color: #cf222e; }
.reason .check { color: #57606a; font-size: 13px; margin: 0 6px; }
.fix { margin-top: 3px; color: #57606a; }
.facts { display: flex; gap: 28px; flex-wrap: wrap; margin: 0; }
.facts dt { color: #57606a; font-size: 13px; } .facts dd { margin: 0; font-weight: 600; }
.chart { display: block; width: 100%; overflow: visible; }
.chart .lane, .chart .axis { font-size: 13px; fill: #57606a; }
.chart .grid { stroke: #eaeef2; }
.legend { display: flex; gap: 16px; font-size: 13px; color: #57606a; flex-wrap: wrap; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
            margin-right: 5px; }
footer { color: #6e7781; font-size: 13px; overflow-wrap: anywhere; }
@media (max-width: 600px) {
  header { padding: 14px 16px; }
  main { padding: 4px 10px 20px; }
  section { padding: 12px 14px; margin: 12px 0; }
  .facts { gap: 10px 22px; }
  .chart .minor { display: none; }
}
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
