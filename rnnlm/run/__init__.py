"""A training run from its settings: its set-up (start), the model the rule sizes for it
(sizing), the loop (training), the optimizers (optim), the memory it will take (memory),
and its workers over MPI (workers)."""
