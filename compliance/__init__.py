"""compliance (see the open issues)."""
