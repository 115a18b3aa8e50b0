"""The old name of ``mux.behaviours``, for configs that say ``behaviours.echo:Echo``: each module is an alias.

A user's own package called ``behaviours`` shadows this one (``mux serve`` puts the working directory first on
``sys.path``), and ``mux.behaviours`` stays reachable whatever they call theirs. New configs: ``mux.behaviours...``.
"""
