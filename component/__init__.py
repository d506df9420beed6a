"""The WAMP component that serves etcd tables under Crossbar (being built)."""
