"""Generic typed shared memory: segments, a broadcast ring, SPSC queues, stats, waiting.

Nothing in this package knows what the records mean. See ordering.py for the
memory-ordering argument everything here relies on.
"""

from appliance.shm.errors import (
    SegmentError,
    SegmentInUse,
    SegmentMismatch,
    SegmentMissing,
    SegmentNameError,
    SegmentTaken,
)
from appliance.shm.files import check_space, format_bytes, free_bytes, list_names
from appliance.shm.ordering import UnsupportedArchitecture, require_tso
from appliance.shm.queue import QueueConsumer, QueueProducer, RecordQueue
from appliance.shm.ring import BroadcastRing, RingReader, RingWriter
from appliance.shm.segment import Segment, remove_instance
from appliance.shm.stats import Stats, StatsSlot, percentile
from appliance.shm.wait import WaitStrategy, resolve

__all__ = [
    "BroadcastRing",
    "QueueConsumer",
    "QueueProducer",
    "RecordQueue",
    "RingReader",
    "RingWriter",
    "Segment",
    "SegmentError",
    "SegmentInUse",
    "SegmentMismatch",
    "SegmentMissing",
    "SegmentNameError",
    "SegmentTaken",
    "Stats",
    "StatsSlot",
    "UnsupportedArchitecture",
    "WaitStrategy",
    "check_space",
    "format_bytes",
    "free_bytes",
    "list_names",
    "percentile",
    "remove_instance",
    "require_tso",
    "resolve",
]
