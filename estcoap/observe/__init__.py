"""Operations at the edge: metrics, request logs and health (docs/operations.md).

hooks.py is what fronts and services report through (no dependencies); metrics.py holds
the Prometheus registry; http.py serves /metrics, /healthz and /readyz. Only the CLI wires
them together, so a front never imports prometheus_client.
"""
