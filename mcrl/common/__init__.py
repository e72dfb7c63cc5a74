"""The bottom layer, shared by all the others: the training config, the policies (rollouts run
their forward pass, the learner their gradients), torch thread counts, and input checks."""
