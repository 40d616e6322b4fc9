"""Fault injection between the worker and the AWS emulator (see `tests.faults.proxy`)."""
