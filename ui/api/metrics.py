"""Prometheus metrics in the text exposition format: a few counters and histograms, no dependency.

Labels are route templates and request kinds, never ids or query text, so the number of series
stays fixed however the API is used.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict

# Seconds: from a cached thumbnail (sub-millisecond) to a large model on a busy CPU.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{n}="{v}"' for n, v in zip(names, values)] + ([extra] if extra else [])
    return "{" + ",".join(pairs) + "}" if pairs else ""


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self._values: dict[tuple[str, ...], float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels: str) -> None:
        with self._lock:
            self._values[labels] += 1

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} counter",
            *(f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in items),
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts (the last for +Inf), sum, count
        self._lock = threading.Lock()

    def observe(self, seconds: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(BUCKETS) + 3))
            series[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
            series[-2] += seconds
            series[-1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            cumulative = 0.0
            for bound, n in zip((*BUCKETS, "+Inf"), series[: len(BUCKETS) + 1]):
                cumulative += n
                le = f'le="{bound}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative:g}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {series[-2]:.6f}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {series[-1]:g}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("pixseek_http_requests_total", "HTTP requests answered.", ("route", "method", "status"))
        self.latency = Histogram(
            "pixseek_http_request_duration_seconds", "Time to answer an HTTP request.", ("route", "method")
        )
        self.search = Histogram("pixseek_search_duration_seconds", "Time in the search layer per search.", ("kind",))
        self.embed = Histogram("pixseek_embed_duration_seconds", "Time in the model per embed request.", ("kind",))

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """All metrics, plus `gauges` (name -> (help, value)) read at scrape time."""
        lines: list[str] = []
        for metric in (self.requests, self.latency, self.search, self.embed):
            lines += metric.render()
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
