"""`Changes` of the two windows (tables/windows.py) written the short way, for tests."""

from __future__ import annotations

from tables.aggregator import Changes
from tables.window_counts import WindowRows
from tables.windows import ACTIVE_USERS, PAGE_VIEWS


def changes(
    page_views=None, active_users=None, sessions=None, final_page_views=(), final_active=()
) -> Changes:
    made = Changes(sessions=dict(sessions or {}))  # every window's rows, empty
    made.windows[PAGE_VIEWS.name] = WindowRows(dict(page_views or {}), set(final_page_views))
    made.windows[ACTIVE_USERS.name] = WindowRows(dict(active_users or {}), set(final_active))
    return made
