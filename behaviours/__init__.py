"""The old name of ``mux.behaviours``, for configs that say ``behaviours.echo:Echo``: each module is an alias.

This folder is not installed by ``pip install .`` (a top-level package of that name would hide a user's own); it is
importable from the repository's root, where ``mux serve`` and the tests run. New configs: ``mux.behaviours...``.
"""
