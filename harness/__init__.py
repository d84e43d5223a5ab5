"""Ray plumbing that is not an actor: the driver-side and Ray Train harnesses.

* ``harness.runtime``: ``init_ray()``, join ``$RAY_ADDRESS`` or start a local runtime;
* ``harness.trainer``: ``TrainTask`` + ``run_training``, the one Ray Train + DeepSpeed
  harness that SFT, the reward model and MM-DPO plug their callables into;
* ``harness.actor_pool``: Ray Data over pools of the generator actors
  (``actors/generator.py``), the driver side of ``generate`` and ``expand``.

The actors themselves (CLIP embedder, generator, critic, ref-logps scorer) live in
``actors/``; the algorithms they run live in the pure ``mmrlhf_ray/``.
"""
