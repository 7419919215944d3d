"""Learner objectives: what ``LearnerActor.train_step(batch, name)`` optimises -- the one table of losses.

An objective is ``fn(model, batch, **kwargs) -> (loss, stats)``: it runs the forward it needs (so
Q-Adapter can read base and adapted logits in one pass) and combines the pure math of
:mod:`rlcustom.algos`; ``fn.loss`` is that pure function (``ppo_clip.loss is algos.ppo.ppo_policy_loss``).
Register one with :func:`rlcustom.registry.register_objective` and a trainer asks for it by name::

    @register_objective("my_loss", loss=my_pure_loss)
    def my_loss(model, batch, *, coef: float = 1.0): ...

Importing this package registers the built-ins (every learner process does, before the first lookup).
"""
from rlcustom.objectives import clipped, l3m, policy, qadapter, shared_critic  # noqa: F401  (registers the built-in objectives)
