"""One router per resource; each route is thin and calls a `fengkong.api.service` module."""
