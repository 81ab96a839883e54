"""Cases and the review queue: what an analyst works through.

A `review` decision (and whatever else ``rules/cases.yaml`` names) is queued on a capped
Redis stream in the decision's own write (`intake`), and a background consumer in each
service worker (`consumer`) writes it into the SQL database as a case (`filing`, a batch
at a time, into the tables of `models`), grouping decisions of the same entity (card,
user or merchant) within a window. Analysts
claim, resolve (fraud / legit / needs_info) and reopen cases (`service`); a resolution is
a label (`labels`): fraud reaches the feature store as a ``fraud_report`` at once, legit
as ``legit_confirmed``, and both go to the labels stream training reads.
docs/cases.md is the reference.
"""
