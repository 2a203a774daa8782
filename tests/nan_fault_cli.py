"""``rewardkit`` with a NaN fault: the reward head's output is multiplied by NaN on the forward calls listed in
``$REWARDKIT_TEST_NAN_CALLS`` (comma-separated, 1-based, per process). For launching under ``accelerate launch``,
where a test's monkeypatch cannot reach (tests/test_deepspeed.py); the code under test is unchanged."""

from __future__ import annotations

import importlib
import os
import sys

from rewardkit.cli import main

if __name__ == "__main__":
    train_module = importlib.import_module("rewardkit.train")
    original, calls = train_module.load_reward_model, {"n": 0}
    nan_calls = {int(c) for c in os.environ["REWARDKIT_TEST_NAN_CALLS"].split(",")}

    def load_with_fault(name, **kw):
        model, tok = original(name, **kw)

        def hook(module, inputs, output):
            calls["n"] += 1
            return output * float("nan") if calls["n"] in nan_calls else output

        model.hf.score.register_forward_hook(hook)
        return model, tok

    train_module.load_reward_model = load_with_fault
    sys.exit(main(sys.argv[1:]))
