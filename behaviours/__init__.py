"""Ready-made behaviours, loaded by dotted path from YAML (``behaviours.echo:Echo``)."""
