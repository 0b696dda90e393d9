"""One policy for a store outage: the rate_limit filter's ``on_store_error`` holds
unless ``store.on_error`` is set on purpose; ``edgegw check`` warns when both are set
and the store's would silently override the filter's (docs/store.md, "When Redis is
unreachable")."""

from __future__ import annotations

import json

from edgegw.chain import STORE_CLUSTER
from edgegw.model import GatewayConfig

_EFFECT = {
    "fail_open": "are let through unlimited",
    "local": "are limited by each host's memory store",
}


def policy_conflicts(config: GatewayConfig) -> list[str]:
    """Why, for each ``mode: global`` filter using the in-process store, the store's
    ``on_error`` would override the filter's ``on_store_error``."""
    store = config.store.on_error
    # Not set: the store answers 503 and the filter decides. fail_closed answers 503 too.
    if store in (None, "fail_closed") or STORE_CLUSTER in config.backends:
        return []
    out = []
    for spec in config.filters.values():
        try:
            doc = json.loads(spec.config or b"null")
        except ValueError:  # not a JSON filter config: not a rate_limit filter's
            continue
        if not isinstance(doc, dict) or doc.get("mode") != "global":
            continue
        if doc.get("store_cluster", STORE_CLUSTER) != STORE_CLUSTER:
            continue
        filter_policy = doc.get("on_store_error", "fail_open")
        if filter_policy != store:
            out.append(
                f"store.on_error: {store} overrides filters.{spec.name}.on_store_error: "
                f"{filter_policy}: while the store is unreachable its requests "
                f"{_EFFECT[store]}; remove store.on_error to let the filter decide, or "
                "set both to the same policy"
            )
    return out
