"""WAMP procedures over txetcd.pmap tables (being built)."""
