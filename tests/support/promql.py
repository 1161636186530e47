"""PromQL as Prometheus reads it, for the tests of what the mesh renders for Prometheus and
Grafana (dashboards, alert and recording rules).

Expressions are parsed by `promql-parser`, the Python bindings of the Rust PromQL parser
(compatible with Prometheus 2.45's grammar), so a test fails where Prometheus would refuse
the expression, with the parser's own message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import promql_parser

#: Grafana's interval variables, which a dashboard's queries use where PromQL takes a
#: duration, each with a duration that stands for it (the longest names first, so that none
#: is replaced inside another).
GRAFANA_INTERVALS = {
    "$__rate_interval": "1m",
    "$__interval_ms": "15000",
    "$__interval": "15s",
    "$__range": "1h",
}


def substituted(expression: str, substitutions: Mapping[str, str]) -> str:
    """`expression` with each key of `substitutions` replaced by its value, in order."""
    for text, replacement in substitutions.items():
        expression = expression.replace(text, replacement)
    return expression


def parse(expression: str, substitutions: Mapping[str, str] | None = None) -> promql_parser.Expr:
    """The syntax tree of `expression`, after `substitutions` (e.g. `GRAFANA_INTERVALS`);
    ValueError, with the parser's message, if Prometheus would refuse it."""
    return promql_parser.parse(substituted(expression, substitutions or {}))


def parse_errors(
    expressions: Iterable[str], substitutions: Mapping[str, str] | None = None
) -> list[str]:
    """One message per expression that does not parse, naming the expression and saying
    why; none when every one parses."""
    errors = []
    for expression in expressions:
        try:
            parse(expression, substitutions)
        except ValueError as error:
            errors.append(f"{expression!r}: {error}")
    return errors


def selectors(tree: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    """Every series selector of `tree`, those of range selectors (`x[5m]`) included."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(tree, visit)
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    """The metric a selector reads: its name, or its `__name__="..."` matcher; None for a
    selector of several metrics (`{__name__=~"..."}`)."""
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    return None


def label_names(selector: promql_parser.VectorSelector) -> set[str]:
    """The labels a selector matches on, `__name__` left out."""
    return {m.name for m in selector.matchers.matchers} - {"__name__"}


def grouping_labels(tree: promql_parser.Expr) -> list[tuple[set[str], promql_parser.Expr]]:
    """Each aggregation's `by (...)` labels, with the expression it aggregates."""
    found: list[tuple[set[str], promql_parser.Expr]] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.AggregateExpr) or node.modifier is None:
            return
        if node.modifier.type == promql_parser.AggModifierType.By:
            found.append((set(node.modifier.labels), node.expr))

    promql_parser.walk(tree, visit)
    return found


#: The functions that read a counter: its increase over a range, not its value.
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})


def counters_read(tree: promql_parser.Expr) -> set[str]:
    """The metrics `tree` reads as counters: those inside `rate`, `increase` and the like."""
    found: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name in COUNTER_FUNCTIONS:
            for argument in node.args:
                found.update(filter(None, map(metric_name, selectors(argument))))

    promql_parser.walk(tree, visit)
    return found
