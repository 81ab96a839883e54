"""Webhooks: subscriptions, a durable outbox in Redis, and signed, retried delivery.

What a subscriber gets: a POST of ``{"id", "kind", "created_at", "data"}`` for each
event of the kinds it asked for (`KINDS`), signed with its secret
(``X-Fengkong-Signature``, `signing.verify`), at least once, with
``X-Fengkong-Delivery`` to dedupe on. docs/webhooks.md is the reference.

Where events come from: the decision path queues ``decision.deny`` and
``decision.review`` in its write-behind batch (`publish_command`); rules reloads,
merchant grade changes (the admin route and `fengkong rescore`) and the cases
package call `publish`. The service's workers deliver (`delivery.Deliverer`).
"""

from fengkong.webhooks.delivery import Deliverer, DeliveryConfig, retry_delay
from fengkong.webhooks.signing import (DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature_header,
                                       verify)
from fengkong.webhooks.store import (KINDS, Subscriptions, check_kinds, check_url, publish, publish_command,
                                     publish_many)

__all__ = ["DELIVERY_HEADER", "EVENT_HEADER", "KINDS", "SIGNATURE_HEADER", "Deliverer", "DeliveryConfig",
           "Subscriptions", "check_kinds", "check_url", "publish", "publish_command", "publish_many",
           "retry_delay", "signature_header", "verify"]
