"""Migration tests: the shipped revisions, the ways to apply them, and the filters."""
