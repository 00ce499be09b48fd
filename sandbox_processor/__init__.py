"""A sandbox payment processor: a small HTTP service of its own that pays refunds and charges
into a SQLite ledger, as a real processor would (signed requests, idempotency keys), and fails on
demand. Run it with `python -m sandbox_processor`; drive it with `sandbox_processor.control`.

It imports nothing of the app: it stands for the far side of the network.
"""
