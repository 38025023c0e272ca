"""The invoicing plugin's web pages and the report routes behind them."""

from __future__ import annotations

PAGES: list = []
