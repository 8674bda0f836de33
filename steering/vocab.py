"""The names every layer shares, written once: targets and pathways, layers, splits, schemes, precisions.

This module imports nothing, so the config schema, the apps' ``--help`` and the torch-free parts
of the sweep can use these names without loading torch, pandas or OmegaConf.
"""

#: What the model predicts, in the order of every per-target column (``dr_valence``, ``dr_arousal``).
TARGETS: tuple[str, str] = ("valence", "arousal")
#: Feedback pathways are named after the head they start from, so pathways and targets are the same
#: names: the valence pathway carries the 128-d activation of the head that predicts valence.
PATHWAYS: tuple[str, str] = TARGETS
#: The conv blocks a pathway can modulate (Cnn6's ``conv_block1..4``).
LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4")
#: ``layer=`` options: one block, or every block the model has a connection to.
LAYER_CHOICES: tuple[str, ...] = (*LAYERS, "all")
#: ``pathway=`` options: one pathway, or both together.
PATHWAY_CHOICES: tuple[str, ...] = (*PATHWAYS, "dual")
#: Parts of a feature file (``all``: every clip).
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
#: How a feature file is split (README, "Splits").
SPLIT_SCHEMES: tuple[str, ...] = ("threeway", "legacy")
#: Arithmetic of the steered passes (``auto``: the fastest one that agrees with fp32).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: Where ``category=predicted`` takes each sample's category from: the final prediction or pass 1.
CATEGORY_SOURCES: tuple[str, ...] = ("final", "pass1")
#: How a run's steering signals are made (``signals.method``): category means, each clip's nearest training
#: clips, or vectors fitted by gradient descent (docs/signals.md).
SIGNAL_METHODS: tuple[str, ...] = ("mean", "knn", "optimized")
#: Which labels the signals are made from (``signals.labels``): the clips' own ratings, ratings permuted
#: among the clips (a control), or none at all (one vector for every clip, a control).
SIGNAL_LABELS: tuple[str, ...] = ("observed", "permuted", "none")
