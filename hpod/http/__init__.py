"""HTTP apps (control API, serving) and the Prometheus exporter, built on narrow
context objects: nothing here imports the daemon or the CLI."""
