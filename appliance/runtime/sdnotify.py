"""sd_notify without a dependency: a datagram to $NOTIFY_SOCKET (see sd_notify(3)).

Reloads follow systemd's protocol (sd_notify(3), "RELOADING=1"): ``RELOADING=1`` with
``MONOTONIC_USEC`` (CLOCK_MONOTONIC when the reload began), then ``READY=1`` once it is
over, applied or rejected; a rejection also says so in ``STATUS=``, which `systemctl
status` shows.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Tells systemd about readiness, status and watchdog; a no-op outside systemd."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        self._addr = None
        if addr:
            # A leading '@' names an abstract socket: a NUL byte in the kernel's terms.
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watched = usec is not None and (pid is None or int(pid) == os.getpid())
        #: seconds between watchdog pings (half the watchdog timeout), or None.
        self.watchdog_interval = int(usec) / 2e6 if watched else None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="running")``."""
        if self._addr is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.sendto(msg, self._addr)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify(READY=1, STATUS=status) if status else self.notify(READY=1)

    def status(self, text: str) -> None:
        self.notify(STATUS=text)

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def reloaded(self, status: str) -> None:
        """The reload is over (applied or rejected): ``status`` says which."""
        self.notify(READY=1, STATUS=status)

    def stopping(self) -> None:
        self.notify(STOPPING=1)
