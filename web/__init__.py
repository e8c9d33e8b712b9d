"""web (see the open issues)."""
