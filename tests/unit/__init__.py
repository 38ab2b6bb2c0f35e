"""Unit tests: the package in this process (and its own CLI as a subprocess), no
outside server or tool; the bulk of the suite, a few minutes."""
