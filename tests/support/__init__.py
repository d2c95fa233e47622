"""Helpers shared by the test suites: real external services started for tests."""
