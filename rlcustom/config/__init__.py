"""Config is data: frozen dataclasses loaded from YAML plus ``a.b=value`` overrides.

Every error is one line that names the file (or the override), the dotted key
and what was expected, with a close-match suggestion for typos::

    configs/ppo.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?)
    override 'optim.lr=-1': key 'optim.lr' must be > 0, got -1

Sections are dataclasses; a field's ``metadata`` may carry bounds (:func:`bounds`,
e.g. ``metadata=positive``) and ``doc`` for the help text. ``Literal`` types give the
allowed choices. Trainers register the dataclass of their own section with
:func:`register_section`, decoders theirs with ``register_decoder`` (:mod:`rlcustom.decoding.registry_cli`,
into :func:`register_decoder_options`). pydantic validates the tree against the dataclasses.

Modules: :mod:`~rlcustom.config.validation` (pydantic over the dataclasses, its errors as one line),
:mod:`~rlcustom.config.sections` (the core sections, :class:`RunConfig`), :mod:`~rlcustom.config.decoder`
(the ``decoder:`` section, typed by the registered decoders), :mod:`~rlcustom.config.load` (YAML + overrides),
:mod:`~rlcustom.config.plugins` (the imports that fill the registries). This package imports no trainer and no
decoder: they register into it.
"""
from rlcustom.config.validation import bounds, non_negative, positive, to_dict, unit_interval
from rlcustom.config.decoder import DECODER_OPTIONS, DecoderConfig, register_decoder_options
from rlcustom.config.rollout import RolloutConfig
from rlcustom.config.load import from_dict, load_config, parse_override, read_yaml
from rlcustom.config.plugins import load_plugins
from rlcustom.config.sections import (SECTIONS, ClusterConfig, DataConfig, LoraConfig, ModelConfig, OptimConfig,
                                      RewardConfig, RoleConfig, RunConfig, SamplingConfig, TrackingConfig,
                                      register_section)

__all__ = ["DECODER_OPTIONS", "SECTIONS", "ClusterConfig", "DataConfig", "DecoderConfig", "LoraConfig",
           "ModelConfig", "OptimConfig", "RewardConfig", "RoleConfig", "RolloutConfig", "RunConfig", "SamplingConfig",
           "TrackingConfig", "bounds", "from_dict", "load_config", "load_plugins", "non_negative", "parse_override",
           "positive", "read_yaml", "register_decoder_options", "register_section", "to_dict", "unit_interval"]
