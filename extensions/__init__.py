"""Bundled extensions: one module (or package) per feature, loaded by name from the config."""
