"""One router per resource; each route is thin and calls `fengkong.api.service`."""
