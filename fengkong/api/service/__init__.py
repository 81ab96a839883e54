"""What the service does, without HTTP: keyword-only functions the routes call.

One module per job: `decisions` (decide a payment flow event, read a stored
decision), `outcomes` (record an outcome event), `idempotency` (the record each
event_id leaves: body hash, waiting for a twin, adopting a lost one), `records` (how
that record is stored compactly, and read in either format), `admin`
(merchants, lists, the live rule set), `dryrun` (a candidate rule set next to the
live one), `ids` (identifiers). Refusals are `fengkong.api.errors`' exceptions.
"""
