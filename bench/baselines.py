"""The baselines dbsync is measured against, doing the same job on the same input.

* Encoding: pymongo's own ``bson.json_util.dumps`` in canonical Extended JSON mode.
* Three-way merge: a plain implementation with ``json`` and ``hashlib`` (``bench.plain``),
  written the way a competent engineer would write it without dbsync's tricks.
"""

from __future__ import annotations

from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from bench.plain import PlainResult, plain_merge

__all__ = ["PlainResult", "json_util_canonical", "plain_merge"]


def json_util_canonical(doc: dict[str, Any]) -> str:
    return json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS)
