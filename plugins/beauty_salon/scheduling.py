"""Who may be booked when: the checks of the one write path (working hours, breaks, time off,
buffers, staff and resource conflicts), safe under concurrent bookings."""

from __future__ import annotations

from typing import Any


def before_save(change: Any, deployment: Any) -> None:
    return None
