"""The composition root: the `muck` command and the processes that wire packages together.

`muck/cli.py` is the command-line root; `muck/collect.py` (the collector with the rules
attached) and `muck/demo.py` (everything on embedded services) are the only places that
join telemetry, compliance, web and the simulators. No product package imports this one.
"""
