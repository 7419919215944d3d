"""Every built-in extension, registered in one place by importing the module that defines it.

Registries (:mod:`rlcustom.registry`) are filled by import: a trainer module registers its trainer and
its ``algo:`` section, a decoder module its factory and its ``decoder:`` options, an estimator module its
estimators, and so on. This module is the one list of
built-ins; :func:`rlcustom.config.load_config` imports it (as a plugin, by name) before resolving a
trainer's section, and ``rlcustom.trainers`` imports it. A module that fails to import fails here,
loudly, with its own traceback (no "unknown trainer" later).

A third-party package adds its own extensions the same way, in a module listed under the
``rlcustom.plugins`` entry-point group (see :func:`rlcustom.config.load_plugins`).
"""
from __future__ import annotations

# pure math: advantage estimators, KL estimators, losses/objectives
from rlcustom.algos import advantages, gae, kl  # noqa: F401
from rlcustom import objectives  # noqa: F401  (policy, L3M and Q-Adapter learner objectives)
# rewards; guided decoders (each registers its factory and its decoder: options)
from rlcustom import rewards  # noqa: F401
from rlcustom.decoding import dera, qadapter as qadapter_decoding, vas  # noqa: F401
# environments of multi-turn rollouts (calculator, python, tools)
from rlcustom import envs  # noqa: F401
# trainers (each registers its trainer and its config section)
from rlcustom.trainers import best_of_n, l3m, offline, pg, ppo as ppo_trainer, qadapter as qadapter_trainer  # noqa: F401
from rlcustom.trainers import vas as vas_trainer  # noqa: F401
