import torch

# The suite runs on 2 shared cores: one intra-op thread per test process avoids oversubscription stalls.
torch.set_num_threads(1)
