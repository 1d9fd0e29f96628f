"""Local fakes of the web services data_prep collects from, for tests and demos.

Each runs as a command (``python -m data_prep.testing.fake_spotify``) so a
collection can be watched end to end without an account. docs/architecture.md
lists the modules.
"""
