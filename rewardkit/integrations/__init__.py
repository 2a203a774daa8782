"""Reward functions for RL frameworks, each a thin layer over :mod:`rewardkit.client` and a running ``rewardkit serve``:

* ``rewardkit.integrations.trl`` — ``RewardFunction`` / ``AsyncRewardFunction`` for TRL's ``GRPOTrainer(reward_funcs=...)``
  (standard and conversational completions, tool calls included);
* ``rewardkit.integrations.verl`` — a ``compute_score`` for verl's ``custom_reward_function``;
* ``rewardkit.integrations.openrlhf`` — a ``reward_func`` file for OpenRLHF's ``--remote_rm_url /path/to/openrlhf.py``.

None of them imports its framework: they only shape the framework's arguments into requests (docs/serving.md).
"""
