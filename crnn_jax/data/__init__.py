"""Data sets: their schema (the contract between data_prep, which writes, and
training, which reads), their description, opening and checking them, and the
input pipeline. docs/architecture.md lists the modules."""
