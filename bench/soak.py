"""The soak's RSS figures from its samples (one every SOAK_SAMPLE_S seconds).

Growth compares medians, not two samples: the lake's flushes and compactions lift RSS
by 100 MB or more for a sample or two, so a figure from the first and the last sample
alone says more about where those spikes fell than about a trend.
"""

from __future__ import annotations

from statistics import median

WINDOW_S = 300
SETTLED_S = 300  # growth is counted from here: the first minutes fill caches and buffers


def rss_medians(samples: list[dict], window_s: int = WINDOW_S) -> list[float]:
    """Median RSS (MB) of each window_s of the soak, in order (the last may be partial)."""
    windows: dict[int, list[float]] = {}
    for sample in samples:
        windows.setdefault(sample["t_s"] // window_s, []).append(sample["rss_mb"])
    return [round(median(windows[w]), 1) for w in sorted(windows)]


def rss_growth(
    samples: list[dict], settled_s: int = SETTLED_S, window_s: int = WINDOW_S
) -> float | None:
    """Median RSS of the soak's last window_s over that of the window_s from settled_s,
    minus one; None when no sample is past settled_s."""
    settled = [s for s in samples if s["t_s"] >= settled_s]
    if len(settled) < 2:
        return None
    end = settled[-1]["t_s"]
    first = [s["rss_mb"] for s in settled if s["t_s"] < settled_s + window_s]
    last = [s["rss_mb"] for s in settled if s["t_s"] > end - window_s]
    return round(median(last) / median(first) - 1, 4)
