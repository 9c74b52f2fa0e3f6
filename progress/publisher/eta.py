"""Rate and ETA of a task, estimated from its recent progress.

Fed at published calls only (at most every TASKPULSE_MIN_INTERVAL), so it costs
nothing on the throttled fast path. The rate is measured over a sliding window
rather than since the start, so a task that speeds up or stalls is estimated
from what it does now.
"""

from collections import deque

WINDOW_SECONDS = 10.0
MAX_SAMPLES = 128
# Below this span two samples are mostly timer noise: no estimate yet.
MIN_SPAN_SECONDS = 0.05
ETA_DECIMALS = 1


class RateEstimator:
    """Units of progress per second over the last WINDOW_SECONDS, and the ETA from it."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)

    def observe(self, now: float, current: float) -> None:
        """Record that progress was `current` at monotonic time `now`."""
        samples = self._samples
        if samples and current < samples[-1][1]:
            samples.clear()  # progress went back (a restart): old samples say nothing
        samples.append((now, current))
        # Keep one sample older than the window, so a slow task still has a span.
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()

    def rate(self) -> float | None:
        """Units per second, or None until there is enough history."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span < MIN_SPAN_SECONDS:
            return None
        return (c1 - c0) / span

    def eta(self, current: float, total: float | None) -> float | None:
        """Seconds left at the recent rate; None when the total or the rate is unknown."""
        if total is None:
            return None
        if current >= total:
            return 0.0
        rate = self.rate()
        if not rate or rate <= 0:
            return None
        return round((total - current) / rate, ETA_DECIMALS)
