"""Safe releases: a service's calls moved from one of its versions to another while the
mesh runs, watched, and moved back by themselves when the new one fails.

`meshctl rollout start catalog --canary v2` gives the canary a first share of the calls
(`actions.start`); the supervisor's `controller.RolloutController` then compares, over
each step's window, the canary's rate, server errors and p99 with the stable version's,
as every caller's Envoy counted them, and promotes it step by step to every call, or
rolls it back at once on a breach (`analysis`). `--blue-green` switches every call at
once after a smoke check and watches one window. The old version keeps running, so
`meshctl rollout undo` returns to the split of before at once. The split itself is
Envoy's runtime, changed without restarting anything (`mesh.control.routing`); the
rollout's state and every decision, with the figures it was made on, are in
`RUN_DIR/rollouts/<service>.json` (`store`).
"""
