"""The fault suite: load through a real sidecar while its backends and its upstream fail.

``python -m tests.faults --duration 60`` runs it and prints a markdown table; ``test_faults.py``
runs it in a short configuration (CI) and asserts what issue 7 requires.  See docs/reliability.md.
"""
