"""The errors every shared-memory problem is reported as."""

from __future__ import annotations


class SegmentError(RuntimeError):
    """Base class for every shared-memory segment problem."""


class SegmentMismatch(SegmentError):
    """An existing segment's header differs from what the caller expects."""


class SegmentInUse(SegmentError):
    """A segment (or a role in it) is held by a live process."""


class SegmentTaken(SegmentError):
    """A segment's or semaphore's name is taken by a file that is not ours to remove:
    another user's, not a regular file, or not a dynamind segment."""


class SegmentMissing(SegmentError):
    """No segment of that name exists."""


class SegmentNameError(SegmentError, ValueError):
    """A segment or semaphore name the system would refuse (too long, a stray '/')."""
