"""Prometheus text exposition of requests, latencies and errors by endpoint (per worker process).

Updated only from the event loop's thread, so plain dicts need no lock."""

from __future__ import annotations

from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, endpoints: set[str]) -> None:
        self.endpoints = endpoints  # known paths; anything else is counted as "other" (bounded label set)
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sum: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.in_flight = 0

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def observe(self, endpoint: str, method: str, status: int, seconds: float, error: str | None) -> None:
        self.requests[(endpoint, method, status)] += 1
        if status >= 400:
            self.errors[(endpoint, error or str(status))] += 1
        counts = self.buckets[endpoint]
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        self.sum[endpoint] += seconds
        self.count[endpoint] += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        out = ["# HELP digitlab_requests_total HTTP requests by endpoint, method and status code.",
               "# TYPE digitlab_requests_total counter"]
        out += [f'digitlab_requests_total{{endpoint="{e}",method="{m}",code="{c}"}} {n}'
                for (e, m, c), n in sorted(self.requests.items())]
        out += ["# HELP digitlab_request_errors_total 4xx and 5xx answers by endpoint and error code.",
                "# TYPE digitlab_request_errors_total counter"]
        out += [f'digitlab_request_errors_total{{endpoint="{e}",error="{k}"}} {n}'
                for (e, k), n in sorted(self.errors.items())]
        out += ["# HELP digitlab_request_duration_seconds Time from the request to the end of the answer.",
                "# TYPE digitlab_request_duration_seconds histogram"]
        for e in sorted(self.count):
            out += [f'digitlab_request_duration_seconds_bucket{{endpoint="{e}",le="{b}"}} {n}'
                    for b, n in zip(BUCKETS, self.buckets[e], strict=True)]
            out += [f'digitlab_request_duration_seconds_bucket{{endpoint="{e}",le="+Inf"}} {self.count[e]}',
                    f'digitlab_request_duration_seconds_sum{{endpoint="{e}"}} {self.sum[e]:.6f}',
                    f'digitlab_request_duration_seconds_count{{endpoint="{e}"}} {self.count[e]}']
        out += ["# HELP digitlab_requests_in_flight Requests being answered now.",
                "# TYPE digitlab_requests_in_flight gauge", f"digitlab_requests_in_flight {self.in_flight}"]
        for name, value in (extra or {}).items():
            out += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(out) + "\n"
