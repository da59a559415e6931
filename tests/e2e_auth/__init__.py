"""Tests of the platform with authentication on; a package, so that its platform fixture is
shared by its modules and stopped after them (pytest's package scope)."""
