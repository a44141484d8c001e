"""The pure core: hashing, tree, tiles, proofs, signed notes, checkpoints, receipts.

Nothing under this package does I/O, reads the clock or the environment.
"""
