"""Management commands of the bounces app."""
