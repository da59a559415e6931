"""Migration scripts, one revision per file (a package so setuptools ships them)."""
