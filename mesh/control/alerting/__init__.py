"""Alerts: from each service's objectives (`slo:` in `mesh.yaml`), the Google SRE
workbook's multiwindow, multi-burn-rate alerts, and plain alerts for what no objective
measures (an instance crash-looping or down, a stuck outbox, a lagging consumer, a
certificate near its end).

`rules` defines them once; `prometheus` renders them as Prometheus rules (a rule file for
Compose, a `PrometheusRule` for Kubernetes); `local` evaluates the same definitions on
the local mesh's own readings, and `webhook` sends each firing and resolution in
Alertmanager's webhook JSON.
"""
