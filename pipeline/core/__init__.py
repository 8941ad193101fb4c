"""What every other package stands on, and nothing of theirs: the one-line user error, atomic
writes, the params.yaml schema and the names and constants it shares with the registries, device
and precision decisions, and child processes that die with their stage."""
