"""simulators (see the open issues)."""
