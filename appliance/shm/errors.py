"""The errors every shared-memory problem is reported as."""

from __future__ import annotations


class SegmentError(RuntimeError):
    """Base class for every shared-memory segment problem."""


class SegmentMismatch(SegmentError):
    """An existing segment's header differs from what the caller expects."""


class SegmentInUse(SegmentError):
    """A segment (or a role in it) is held by a live process."""


class SegmentMissing(SegmentError):
    """No segment of that name exists."""


class SegmentNameError(SegmentError, ValueError):
    """A segment or semaphore name the system would refuse (too long, a stray '/')."""
