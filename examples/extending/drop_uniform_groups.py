"""A new batch filter, one file: PPO that drops the groups whose answers all scored the same.

Such a group has zero group advantage (GRPO/RLOO) -- no signal, only a length-biased gradient
from the KL term -- so DAPO (Yu et al. 2025, "dynamic sampling") leaves it out of the update.
Use it with ``trainer: ppo_varied`` (and ``algo.advantage: grpo`` or ``rloo``) once this module
is imported (``python -c "import drop_uniform_groups; ..."``, or list it as an ``rlcustom.plugins``
entry point of your package).
"""
from rlcustom.config import register_section
from rlcustom.trainers import register_trainer
from rlcustom.trainers.pipeline import Step, varied_groups
from rlcustom.trainers.ppo import PPOConfig, PPOTrainer

register_section("ppo_varied")(PPOConfig)  # the same algo: section as ppo


@register_trainer("ppo_varied")
class VariedPPOTrainer(PPOTrainer):
    def filter(self, s: Step) -> None:
        s.select(varied_groups(s.scores, s.ro.prompt_index))  # every per-row field follows
