"""Appointment reminders: automation events, actions and jobs."""

from __future__ import annotations

from typing import Any


def events(register: Any) -> None:
    return None


def actions(register: Any) -> None:
    return None


def jobs(register: Any) -> None:
    return None
