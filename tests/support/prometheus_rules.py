"""A Prometheus rule file checked as Prometheus loads one (its `rulefmt` package): groups
with unique names, each rule exactly one of a recording or an alerting rule with the
fields its kind allows, valid metric and label names, durations where Prometheus takes
them, templates whose actions close, and every expression parsed by a real PromQL parser.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.promql import parse_errors

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels"}
_RECORDING_KEYS = {"record", "expr", "labels"}
_ALERTING_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def rule_file_errors(document: dict[str, Any]) -> list[str]:
    """What Prometheus would refuse in the rule file `document`; none when it loads."""
    if set(document) != {"groups"}:
        return [f"a rule file has only `groups`, not {sorted(document)}"]
    errors: list[str] = []
    names = [group.get("name") for group in document["groups"]]
    if len(set(names)) != len(names):
        errors.append(f"group names repeat: {names}")
    for group in document["groups"]:
        errors += _group_errors(group)
    return errors


def _group_errors(group: dict[str, Any]) -> list[str]:
    where = f"group {group.get('name')!r}"
    errors = [f"{where}: unknown field {k!r}" for k in set(group) - _GROUP_KEYS]
    if not group.get("name"):
        errors.append(f"{where}: no name")
    if "interval" in group and not _DURATION.fullmatch(str(group["interval"])):
        errors.append(f"{where}: interval {group['interval']!r} is not a duration")
    for index, rule in enumerate(group.get("rules") or []):
        errors += [f"{where}, rule {index}: {e}" for e in _rule_errors(rule)]
    return errors


def _rule_errors(rule: dict[str, Any]) -> list[str]:
    if ("record" in rule) == ("alert" in rule):
        return ["a rule is either a recording (`record`) or an alerting (`alert`) rule"]
    recording = "record" in rule
    allowed = _RECORDING_KEYS if recording else _ALERTING_KEYS
    errors = [f"unknown field {k!r}" for k in set(rule) - allowed]
    if recording and not _METRIC_NAME.fullmatch(str(rule["record"])):
        errors.append(f"record {rule['record']!r} is not a metric name")
    if not recording and not str(rule["alert"]).strip():
        errors.append("an empty alert name")
    if not str(rule.get("expr", "")).strip():
        errors.append("no expr")
    else:
        errors += parse_errors([str(rule["expr"])])
    for key in ("for", "keep_firing_for"):
        if key in rule and not _DURATION.fullmatch(str(rule[key])):
            errors.append(f"{key} {rule[key]!r} is not a duration")
    for key in ("labels", "annotations"):
        errors += _label_errors(rule.get(key) or {}, key)
    return errors


def _label_errors(labels: dict[str, Any], kind: str) -> list[str]:
    errors = []
    for name, value in labels.items():
        if not _LABEL_NAME.fullmatch(str(name)) or str(name) == "__name__":
            errors.append(f"{kind}: {name!r} is not a label name")
        if not isinstance(value, str):
            errors.append(f"{kind}: {name}'s value is not a string")
        elif value.count("{{") != value.count("}}"):
            errors.append(f"{kind}: {name}'s template leaves an action open: {value!r}")
    return errors
