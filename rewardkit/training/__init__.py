"""Training, in three parts a recipe assembles (``rewardkit.train``, ``rewardkit.judges.genrm``):

* ``loop`` — the optimiser step (micro-batches, DDP ``no_sync``, zero-weight passes, the DeepSpeed boundary,
  clipping, the non-finite-step policy, checkpoint and evaluation cadence); returns its result as a value;
* ``objectives`` — what a micro-batch's loss is (pairwise, ODIN, aspect heads + gate, the GenRM verifier),
  each one small component with the protocol :class:`rewardkit.training.objectives.Objective`;
* ``common`` — what every recipe needs around them: records, optimizer and scheduler, distributed scoring,
  reward statistics, the not-learning warning, the report.
"""
