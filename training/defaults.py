"""Training defaults, torch-free so that the command line can show them without torch.

Defaults for `tiny` on the synthetic set: they train it stably from scratch (the demo
and every run in docs/RESULTS.md use them). They were set by hand, not by a search;
for the ResNet-50 architectures pass --lr and --batch-size for your hardware.
"""

DEFAULT_LR = 0.02
DEFAULT_BATCH = 4
DEFAULT_ITERS = 1500
DEFAULT_LABELED_RATIO = 0.6  # students: share of labeled images in a minibatch (6:4)
