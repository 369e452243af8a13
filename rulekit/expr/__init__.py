"""Conditions and templates: parsing, the sandbox and its policy, code generation, filters."""
