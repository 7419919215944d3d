"""The one training engine of the learner and the critic (DeepSpeed, ZeRO 0-3, data parallel).

Modules, one job each:

- :mod:`~rlcustom.training.engine`: :class:`TrainingEngine` (train step, gradients, no-grad forwards, counters)
- :mod:`~rlcustom.training.ds_config`: the DeepSpeed config dict and the process group
- :mod:`~rlcustom.training.optim`: AdamW / CPU Adam and the LR schedule (``transformers.get_scheduler``)
- :mod:`~rlcustom.training.batches`: micro-batches, weighting units, small all-reduces
- :mod:`~rlcustom.training.accumulate`: micro-batch accumulation with the full-batch-mean loss scaling
- :mod:`~rlcustom.training.step`: per-step clipping and the non-finite policy (skip, discard gradients)
- :mod:`~rlcustom.training.serialize`: plain-data state (``weights_only=True``) and RNG states
- :mod:`~rlcustom.training.weights`: weight naming, merged/adapter payloads for sync, ZeRO-3 gathers
- :mod:`~rlcustom.training.export`: standalone model / adapter directories
- :mod:`~rlcustom.training.checkpoint`: per-rank optimizer/scheduler/RNG checkpoint files
- :mod:`~rlcustom.training.modules`: the learner's module (causal LM, LoRA, reward model)
- :mod:`~rlcustom.training.value_objectives`: the critic's objectives (``value_mse``, ``value_clip``)

Layer: imports ``algos``, ``models``, ``data``, ``engines``; never ``actors``, ``runtime``,
``trainers``, ``eval`` or ``cli``.
"""
