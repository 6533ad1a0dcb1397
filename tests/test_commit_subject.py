"""The snapshot commit's subject: what the writer writes, the parser reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbsync.core.asset_names import asset_of
from dbsync.core.commit_subject import SnapshotSubject, parse_snapshot_subject, snapshot_subject
from dbsync.runs.log import commit_asset

ASSETS = st.text(st.characters(blacklist_characters="\n"), min_size=1)


@given(ASSETS, st.integers(min_value=0, max_value=10**12))
def test_a_subject_parses_back_to_its_asset_and_records(asset: str, records: int) -> None:
    subject = snapshot_subject(asset, records)
    assert parse_snapshot_subject(subject) == SnapshotSubject(asset, records)
    assert asset_of(subject) == asset == commit_asset(subject)


def test_the_subject_reads_as_the_product_says() -> None:
    assert snapshot_subject("laptop", 190) == "dbsync: laptop snapshot (190 records)"
    tricky = "a snapshot (3 records) b"
    assert parse_snapshot_subject(snapshot_subject(tricky, 5)) == SnapshotSubject(tricky, 5)


def test_other_subjects_name_no_asset() -> None:
    for subject in ("fix a typo", "dbsync: laptop snapshot", "dbsync: snapshot (3 records)"):
        assert parse_snapshot_subject(subject) is None
        assert asset_of(subject) is None and commit_asset(subject) is None
