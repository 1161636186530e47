"""The web console of a running local mesh, served on loopback by its own process.

What an operator would rather look at than read: the service map with each link's live
rate, errors and p99 and each node's health (`graph`, `measure`, `live`), and the traces
behind them, searchable and drawn as waterfalls (`server`, over `mesh.control.tracestore`).
The page is plain HTML, CSS and JavaScript from `static/`: nothing from a CDN, so it
works without the internet.

Run by the supervisor as `python -m mesh.control.console --port P --run-dir DIR
--config mesh.yaml`; `meshctl status` prints its URL, which carries the token it asks of
every visitor (`server`).
"""
