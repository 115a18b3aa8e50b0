"""Ready-made behaviours, under mux's own name so that a user's package called ``behaviours`` cannot hide them.

Load them by dotted path from YAML (``mux.behaviours.echo:Echo``) or import them (``from mux.behaviours.echo import
Echo``). The repository's top-level ``behaviours`` package is kept as an alias for configs written before.
"""
