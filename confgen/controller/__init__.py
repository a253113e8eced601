"""On-demand serving: one controller per host starts, sleeps, wakes and stops the model servers named in
deployments.yml's `on_demand:` section, keeping resident what the fit planner says fits together.

plan.py     the section resolved against the catalog and the planner (also what `confgen check` asks)
evict.py    which resident models leave so another fits (pure)
core.py     the lifecycle of each model server, through one runner (confgen/runtime/runner.py)
api.py      the authenticated loopback HTTP API (ensure-ready, sleep, stop, status) and its client
"""
