"""VAS with an int8 value model (``decoder.dtype=int8``): values stay close to float32, the cached
tree path agrees with full forwards, and the option is refused where it cannot work."""
from __future__ import annotations

import pytest
import torch

from rlcustom.config import DecoderConfig
from rlcustom.decoding.value_cache import ValueCache
from rlcustom.decoding.vas import VASStep, _load_values, _to_device, vas_decoder
from rlcustom.engines.base import SamplingParams
from rlcustom.engines.hf import HFEngine, left_pad
from rlcustom.models.heads import ValueModel
from rlcustom.models.quantize import is_quantized, quantize_backbone_int8
from rlcustom.models.tiny import tiny_llama


@pytest.fixture(scope="module")
def value_fp32():
    # wider than the default tiny model so the int8 matmuls see realistic (non-degenerate) rows
    return ValueModel.from_backbone_of(tiny_llama(1, hidden=128, intermediate=256, heads=4)[0], init_std=0.5).eval()


def _ids():
    return left_pad([[5, 6, 7, 8, 9, 10, 11, 12], [12, 13, 14], [14, 15, 16, 17, 18]], 2)


def test_int8_values_close_to_float32_and_original_untouched(value_fp32):
    ids, attn = _ids()
    with torch.no_grad():
        ref = value_fp32(ids, attn)
        q = quantize_backbone_int8(value_fp32)
        got = q(ids, attn)
        again = value_fp32(ids, attn)
    assert is_quantized(q) and not is_quantized(value_fp32)
    assert torch.equal(again, ref)  # a copy was quantised, not the caller's model
    valid = attn.bool()
    err = (got - ref)[valid].abs()
    spread = ref[valid].std()
    assert spread > 0.1
    # quantisation noise is small next to the differences VAS ranks children by (a random tiny model with a
    # large head is a harsh case: on the trained 135M value model the mean error is ~1% of the spread)
    assert err.mean() < 0.05 * spread and err.max() < 0.2 * spread, (err.mean(), err.max(), spread)
    assert torch.corrcoef(torch.stack([got[valid], ref[valid]]))[0, 1] > 0.99
    assert not torch.equal(got, ref)  # it did change the arithmetic (the comparison above is not vacuous)


def test_int8_tree_cache_tracks_full_float32_forwards(value_fp32):
    vm = quantize_backbone_int8(value_fp32)
    ids, attn = _ids()
    vc = ValueCache(vm, mode="tree")
    vc.start(ids, attn)
    kids = torch.stack([torch.randperm(3000, generator=torch.Generator().manual_seed(i))[:6] for i in range(3)])
    one = torch.ones(3, 1, dtype=torch.long)
    with torch.no_grad():
        got = vc.children(kids)
        ref = torch.stack([value_fp32(torch.cat([ids, kids[:, j:j + 1]], 1), torch.cat([attn, one], 1))[:, -1]
                           for j in range(kids.shape[1])], dim=1)
    # activations are quantised per forward (a batch-wide scale): close to float32, not bit-equal
    err, spread = (got - ref).abs(), ref.std()
    assert err.mean() < 0.05 * spread and err.max() < 0.2 * spread, (err.mean(), err.max(), spread)
    assert torch.equal(got.argmax(1), ref.argmax(1))  # the child VAS favours most is the same


def test_vas_step_distribution_int8_close_to_float32(value_fp32):
    model, tok = tiny_llama(0, initializer_range=0.2)
    ids, attn = _ids()
    with torch.no_grad():
        base = torch.log_softmax(model(input_ids=ids, attention_mask=attn,
                                       position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits[:, -1], -1)
        steps = {d: VASStep(model, _load_values(value_fp32, d), [2.0], k=10) for d in (None, "int8")}
        lp = {d: torch.log_softmax(s.start(ids, attn), -1) for d, s in steps.items()}

    def kl(p, q):  # KL(p || q) per row, from log-probs
        return (p.exp() * (p - q)).sum(-1)
    steer = kl(lp[None], base)      # how far the float32 value model moves pi_0
    noise = kl(lp[None], lp["int8"])  # how far int8 moves that
    assert steer.min() > 0.05  # the value model does steer (the comparison is not vacuous)
    assert (noise < 0.1 * steer).all(), (noise, steer)
    out = HFEngine(model, tok).generate([tok.decode(r) for r in ids.tolist()],
                                        SamplingParams(max_new_tokens=4, temperature=0.0, stop_on_eos=False),
                                        decoder=vas_decoder(value_fp32, 2.0, k=10, dtype="int8"))
    assert [len(r) for r in out.response_ids] == [4, 4, 4]  # the engine path runs with an int8 value model


def test_int8_refused_off_cpu_and_for_other_decoders(value_fp32):
    q = quantize_backbone_int8(value_fp32)
    with pytest.raises(ValueError, match="CPU only"):
        _to_device(q, torch.device("cuda"))
    with pytest.raises(ValueError, match="key 'decoder.dtype' must be one of 'float32', 'bfloat16', 'float16' or null, "
                                         "got 'int8'"):  # dera's dtype has no int8
        DecoderConfig.of("dera", aligned="some/dir", dtype="int8")
    DecoderConfig.of("vas", value="some/dir", dtype="int8").check()  # accepted for vas
