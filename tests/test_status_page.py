"""The agent's status page (``GET /``) and metrics (``GET /metrics``): rendered from literal data
and parsed back (html.parser, prometheus_client's text parser), then served by a real agent."""

from __future__ import annotations

import datetime
import re
import urllib.request
from html.parser import HTMLParser

from prometheus_client.parser import text_string_to_metric_families

from dbsync.agent.metrics import MetricsInput, render_metrics
from dbsync.agent.status_page import PageInput, render_page
from dbsync.edges.state import CollectionState, HistoryEntry, LosingVersion
from tests.git_helpers import real_records
from tests.test_agent import RunningAgent

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
STATUS = {
    "status": "DEGRADED",
    "asset": "laptop",
    "database": "shop",
    "reasons": [
        {
            "level": "DEGRADED",
            "check": "failures",
            "message": "pnl: the last 3 merges failed",
            "fix": "run 'dbsync merge database_backup'",
        }
    ],
    "collections": {
        "pnl": {
            "last_export": {"time": "2026-12-01T11:55:00+00:00", "records": 190},
            "last_merge": {"time": "2026-12-01T10:00:00+00:00", "records": 188},
        },
        "<b>odd</b>": {"last_export": None, "last_merge": None},
    },
    "pending_merges": [
        {"id": 4, "source": "database_backup", "created": "2026-12-01T11:00:00+00:00"}
    ],
}


def entry(time: str, operation: str, status: str = "success") -> HistoryEntry:
    return HistoryEntry(time, operation, "pnl", status, 190, 120, None, "laptop")


HISTORY = [
    entry("2026-12-01T11:55:00+00:00", "export"),
    entry("2026-12-01T11:50:00+00:00", "merge", "failed"),
    entry("2026-12-01T10:00:00+00:00", "merge"),
]
CONFLICT = LosingVersion(
    collection="pnl",
    key='[{"$oid":"6865e26e00db2977eb40450d"}]',
    loser="{}",
    winner_hash="ab",
    winner=None,
    rule="newer timestamp",
    asset="server",
    place="hook",
    id=7,
    time="2026-12-01T11:30:00+00:00",
)


class Page(HTMLParser):
    """The page as a reader sees it: its text, its table rows, and what it would load."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self.loads: list[str] = []
        self.circles = 0
        self.headline = ""
        self._in_cell = self._in_headline = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        self.loads += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")
        if tag == "circle":
            self.circles += 1
        if tag == "h1" and found.get("class") == "status":
            self._in_headline = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False
        if tag == "h1":
            self._in_headline = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.rows[-1][-1] += data
        if self._in_headline:
            self.headline += data

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def page() -> Page:
    return Page(render_page(PageInput(STATUS, HISTORY, [CONFLICT], NOW, {"cycles": 3})))


def test_the_page_says_the_status_its_reasons_and_their_fixes() -> None:
    seen = page()
    assert seen.headline == "DEGRADED"
    assert "pnl: the last 3 merges failed" in seen.all_text
    assert "run 'dbsync merge database_backup'" in seen.all_text


def test_the_page_shows_collections_pending_merges_conflicts_and_runs() -> None:
    rows = page().rows
    assert ["pnl", "190", "5 min ago", "2 h ago", "0"] in rows
    assert any(row[:2] == ["4", "database_backup"] for row in rows)
    conflict = next(row for row in rows if "newer timestamp" in row)
    assert conflict[1] == "pnl" and conflict[4] == "hook on server"
    assert sum(1 for row in rows if "failed" in row) == 1


def test_the_chart_draws_every_run_and_the_page_loads_nothing() -> None:
    seen = page()
    assert "svg" in seen.tags and seen.circles == len(HISTORY)
    assert "script" not in seen.tags
    assert seen.loads == []  # no script, stylesheet, font or image from anywhere


def test_every_value_is_escaped() -> None:
    seen = page()
    assert "<b>odd</b>" in seen.all_text  # shown as text...
    assert "b" not in seen.tags  # ...never as markup


def test_an_empty_asset_has_a_page_too() -> None:
    blank = {"status": "HEALTHY", "reasons": [], "collections": {}, "pending_merges": []}
    seen = Page(render_page(PageInput(blank, [], [], NOW)))
    assert seen.headline == "HEALTHY"
    assert "every check passed" in seen.all_text
    assert "The chart appears after the first run." in seen.all_text


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def collection_state(operation: str, time: str | None, records: int, failures: int = 0):
    return CollectionState("pnl", operation, time, records, 100, "d", failures, None, None)


def test_metrics_parse_and_count_runs_durations_records_pending_and_conflicts() -> None:
    data = MetricsInput(
        history=HISTORY,
        collections=[
            collection_state("export", "2026-12-01T11:55:00+00:00", 190),
            collection_state("merge", "2026-12-01T10:00:00+00:00", 188, failures=1),
        ],
        pending_merges=1,
        conflicts_decided={"pnl": 2},
        agent={"cycles": 5, "consecutive_failures": 0},
    )
    values = metric_values(render_metrics(data).decode())
    assert values[("dbsync_runs_total", (("operation", "merge"), ("outcome", "failed")))] == 1
    assert values[("dbsync_runs_total", (("operation", "merge"), ("outcome", "success")))] == 1
    export = (("collection", "pnl"), ("operation", "export"))
    last = datetime.datetime(2026, 12, 1, 11, 55, tzinfo=datetime.timezone.utc).timestamp()
    assert values[("dbsync_last_success_timestamp_seconds", export)] == last
    assert values[("dbsync_records", (("collection", "pnl"),))] == 190  # the newer success
    assert values[("dbsync_pending_merges", ())] == 1
    assert values[("dbsync_conflicts_decided_total", (("collection", "pnl"),))] == 2
    merges = (("operation", "merge"),)
    assert values[("dbsync_run_duration_seconds_count", merges)] == 2
    assert values[("dbsync_run_duration_seconds_bucket", (("le", "0.1"), *merges))] == 0
    assert values[("dbsync_run_duration_seconds_bucket", (("le", "0.25"), *merges))] == 2
    assert values[("dbsync_agent_cycles_total", ())] == 5


def get(port: int, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_a_running_agent_serves_the_page_and_parseable_metrics(pair) -> None:
    a, _ = pair
    a.import_records(real_records()[:5])
    a.dbsync("export", "-q")
    agent = RunningAgent(a)
    try:
        agent.wait_for(r"cycle 1:")
        status, kind, html = get(agent.port, "/")
        assert status == 200 and kind.startswith("text/html")
        seen = Page(html)
        assert seen.headline in ("HEALTHY", "WARNING", "DEGRADED")
        assert any(row[:2] == ["pnls", "5"] for row in seen.rows)
        assert seen.circles >= 2  # the import and the export, at least
        _, _, text = get(agent.port, "/metrics")
        values = metric_values(text)
        assert values[("dbsync_records", (("collection", "pnls"),))] == 5
        assert values[("dbsync_agent_cycles_total", ())] >= 1
    finally:
        agent.stop()


def css_rules(html: str) -> dict[str, str]:
    """The page's style as ``{selector: declarations}``, the rules inside a media query under
    ``@media ... selector``; a selector listed twice keeps both declarations."""
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    rules: dict[str, str] = {}
    media = ""
    for chunk in re.split(r"(?<=})", style):
        if "@media" in chunk:
            media = chunk[chunk.index("@media") : chunk.index("{")].strip() + " "
            chunk = chunk[chunk.index("{") + 1 :]
        if "{" in chunk:
            selector, body = chunk.split("{", 1)
            for name in selector.split(","):
                key = media + " ".join(name.split())
                rules[key] = rules.get(key, "") + body.rstrip("}").strip() + ";"
        elif chunk.strip() == "}":
            media = ""
    return rules


def test_the_page_reads_on_a_phone() -> None:
    """At 390 px a table scrolls inside its card (the page never scrolls sideways), and the chart
    is drawn at the page's own scale: no viewBox shrinking its 13 px labels to 5 px; its dots
    and ticks are placed in percent of its width, and the crowded ticks give way."""
    html = render_page(PageInput(STATUS, HISTORY, [CONFLICT], NOW, {"cycles": 3}))
    rules = css_rules(html)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    tables = html.count("<table")
    assert tables >= 3 and html.count('<div class="scroll"><table') == tables
    assert "overflow-x: auto" in rules[".scroll"]
    assert "white-space: nowrap" in rules[".scroll td"]  # a row stays one line high...
    assert "white-space: normal" in rules[".long"]  # ...but for an error, in its own column
    chart = re.search(r"<svg [^>]*>", html)
    assert chart is not None and 'class="chart"' in chart.group()
    assert "viewBox" not in chart.group() and 'width="100%"' in chart.group()
    assert re.search(r'height="\d+"', chart.group())
    assert "height: auto" not in rules[".chart"]  # that would ignore the height and draw 150 px
    dots = re.findall(r'<circle cx="([^"]+)"', html)
    assert len(dots) == len(HISTORY) and all(x.endswith("%") for x in dots)
    narrow = {k: v for k, v in rules.items() if k.startswith("@media (max-width")}
    assert "display: none" in next(v for k, v in narrow.items() if k.endswith(".chart .minor"))
