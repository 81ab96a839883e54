"""Migration scripts, one branch per part of the project that owns tables."""
