"""Bytes in and out: texts and their vocabularies (data, corpus), checkpoints, the one
writer of every output file (outputs), and a run's directory (rundir)."""
