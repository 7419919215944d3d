"""The docs' extending examples (examples/extending/, one file each) work as written."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "extending"


def load(name):
    """Import an example as a plugin would be (in sys.modules: its source, hence its keys' help, is readable);
    once per session, as registries refuse a second, different registration of a name."""
    if f"example_{name}" in sys.modules:
        return sys.modules[f"example_{name}"]
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_new_estimator_registers_and_computes_the_hand_case():
    load("signed_advantage")
    from rlcustom.registry import ADV_ESTIMATORS

    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]])
    # group 0: scores 1, 3 (mean 2) -> -1, +1; group 1: 2, 2 -> 0, 0
    adv, ret = ADV_ESTIMATORS.get("signed")(token_rewards=None, values=None, mask=mask,
                                             scores=torch.tensor([1.0, 3.0, 2.0, 2.0]),
                                             group_ids=torch.tensor([0, 0, 1, 1]), gamma=1.0, lam=1.0)
    assert ret is None and adv.tolist() == [[-1.0, -1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_new_filter_trainer_registers_and_drops_uniform_groups():
    mod = load("drop_uniform_groups")
    from rlcustom.config import load_config
    from rlcustom.engines.base import Rollouts
    from rlcustom.registry import TRAINERS
    from rlcustom.trainers.pipeline import Step

    assert TRAINERS.get("ppo_varied") is mod.VariedPPOTrainer
    cfg = load_config(None, ["trainer=ppo_varied", "algo.advantage=grpo", "tracking.mode=disabled"])
    ro = Rollouts([[1], [1], [2], [2]], [[5], [6], [7], [8]], [[0.0]] * 4, ["stop"] * 4, [0, 0, 1, 1])
    s = Step(ro=ro, batch=ro.padded(0), scores=torch.tensor([1.0, 1.0, 0.0, 4.0]))
    mod.VariedPPOTrainer(cfg).filter(s)
    assert s.ro.response_ids == [[7], [8]] and s.scores.tolist() == [0.0, 4.0]


def test_new_decoder_registers_its_keys_and_scores_the_hand_case():
    mod = load("contrastive_decoder")
    from rlcustom.config import load_config
    from rlcustom.errors import ConfigError
    from rlcustom.registry import DECODERS

    assert DECODERS.get("contrastive") is mod.contrastive_decoder
    d = load_config(None, ["decoder.name=contrastive", "decoder.amateur=m", "decoder.alpha=0.5"]).decoder
    assert d == mod.ContrastiveOptions(name="contrastive", amateur="m", alpha=0.5)
    with pytest.raises(ConfigError, match=r"decoder.beta is not used by decoder.name=contrastive \(it takes "
                                          r"decoder.amateur, decoder.alpha\)"):
        load_config(None, ["decoder.name=contrastive", "decoder.beta=[1]"])
    with pytest.raises(ConfigError, match=r"key 'decoder.alpha' must be in \(0, 1\], got 0"):
        load_config(None, ["decoder.name=contrastive", "decoder.alpha=0"])
    with pytest.raises(ValueError, match=r"decoder.amateur is required for decoder.name=contrastive"):
        d.of("contrastive").check()
    # p_exp = (.5, .3, .15, .05), p_ama = (.25, .5, .125, .125), alpha = .2: V_head = {0, 1, 2} (p >= .1)
    s = mod.contrastive_scores(torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log(),
                               torch.tensor([[0.25, 0.5, 0.125, 0.125]]).log(), 0.2)
    assert torch.allclose(s[0, :3], torch.tensor([2.0, 0.6, 1.2]).log()) and s[0, 3] == float("-inf")


def test_new_decoder_runs_in_the_engine(tiny, tmp_path):
    mod = load("contrastive_decoder")
    from rlcustom.decoding.registry_cli import GuidedDecoder
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine
    from rlcustom.models.loading import load_causal_lm
    from rlcustom.models.tiny import save_tiny

    model, tok = tiny
    amateur_dir = str(save_tiny(tmp_path / "amateur", seed=1))
    prompt = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False,
                                     add_generation_prompt=True)
    eng, greedy = HFEngine(model, tok), SamplingParams(max_new_tokens=4, temperature=0.0)
    plain = eng.generate([prompt], greedy).response_ids
    only_argmax = GuidedDecoder("contrastive", {"amateur": amateur_dir, "alpha": 1.0}, model, tok)
    assert eng.generate([prompt], greedy, decoder=only_argmax.factory()).response_ids == plain  # V_head = {argmax}
    out = eng.generate([prompt], greedy, decoder=GuidedDecoder("contrastive", {"amateur": amateur_dir}, model,
                                                               tok).factory()).response_ids
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # the first token: the argmax of the scores of the prompt's next-token logits
        s = mod.contrastive_scores(model(ids).logits[:, -1].float(), load_causal_lm(amateur_dir)(ids).logits[:, -1], 0.1)
    assert out[0][0] == int(s.argmax()) and out != plain
