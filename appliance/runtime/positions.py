"""The positions-snapshot protocol between execution and each agent host.

Execution publishes each host's positions (``model.records.POSITION``, one row per agent,
one column per symbol) in a shared snapshot whose tags say what the positions include.
"""

from __future__ import annotations

#: Tags of a positions snapshot: the report-queue head and the intent-queue tail its
#: positions include, and an epoch bumped whenever hosts must reload from it.
TAG_REPORTS_HEAD, TAG_EPOCH, TAG_INTENTS_TAIL = 0, 1, 2
