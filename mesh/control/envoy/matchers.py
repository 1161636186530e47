"""A filter run only for some requests: Envoy's `ExtensionWithMatcher` around it, whose
matcher skips it for a request (or a response) that matches any of some predicates on
headers. A skipped filter costs the request nothing but the match."""

from __future__ import annotations

from typing import Any

_TYPES = "type.googleapis.com/envoy"
_SKIP = {
    "name": "skip",
    "typed_config": {"@type": f"{_TYPES}.extensions.filters.common.matcher.action.v3.SkipFilter"},
}


def _header(input_type: str, name: str, regex: str) -> dict[str, Any]:
    header = {
        "name": name,
        "typed_config": {"@type": f"{_TYPES}.type.matcher.v3.{input_type}", "header_name": name},
    }
    match = {"safe_regex": {"google_re2": {}, "regex": regex}}
    return {"single_predicate": {"input": header, "value_match": match}}


def request_header(name: str, regex: str) -> dict[str, Any]:
    """A predicate: the request header `name` is there and matches `regex`."""
    return _header("HttpRequestHeaderMatchInput", name, regex)


def response_header(name: str, regex: str) -> dict[str, Any]:
    """A predicate: the response header `name` is there and matches `regex` (the filter
    runs on the request, and is skipped once the response's headers match)."""
    return _header("HttpResponseHeaderMatchInput", name, regex)


def not_(predicate: dict[str, Any]) -> dict[str, Any]:
    return {"not_matcher": predicate}


def skipped_when(
    predicates: list[dict[str, Any]], name: str, extension: dict[str, Any]
) -> dict[str, Any]:
    """The filter `extension` (its `name` and `typed_config`), named `name` in the chain,
    skipped for a request that matches any of `predicates`."""
    matched = predicates[0] if len(predicates) == 1 else {"or_matcher": {"predicate": predicates}}
    skip = {"predicate": matched, "on_match": {"action": _SKIP}}
    return {
        "name": name,
        "typed_config": {
            "@type": f"{_TYPES}.extensions.common.matching.v3.ExtensionWithMatcher",
            "xds_matcher": {"matcher_list": {"matchers": [skip]}},
            "extension_config": extension,
        },
    }
