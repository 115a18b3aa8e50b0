"""``mux bench``: one behaviour over each transport through the impairment proxy, compared A/B with a table and plot.

matrix (the YAML file and the run order) -> runner (one run at a time, under timeouts) -> workloads (the client
side, driving ``mux.behaviours.bench``) against peer/worker (server and proxy) -> report (table, JSON/CSV, PNG).
"""
