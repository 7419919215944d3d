"""The ``hf`` engine: transformers models, batched sampling with a KV cache.

It hosts the decoders that combine several models per step: a decoder is a
:class:`~rlcustom.engines.base.StepModel` (``start``/``advance`` returning
next-token logits), and ``processors`` are plain ``(generated [B, t], logits
[B, V]) -> logits`` callables applied before sampling.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from rlcustom.engines.base import Rollouts, SamplingParams, StepModel

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CausalLMStep:
    """One causal LM with a KV cache; left-padded prompts get correct positions."""

    def __init__(self, model) -> None:
        self.model = model

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dev = model_device(self.model)  # prompts are built on CPU; the model may sit on a GPU
        input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
        self.attn = attention_mask
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                         use_cache=True, logits_to_keep=1)
        self.cache, self.pos = out.past_key_values, pos[:, -1:]
        return out.logits[:, -1].float()

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        self.pos = self.pos + 1
        out = self.model(input_ids=tokens.to(self.attn.device)[:, None], attention_mask=self.attn, position_ids=self.pos,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering (Holtzman et al. 2020); removed entries -> -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits


def sample_loop(step: StepModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams,
                eos_ids: Sequence[int], pad_id: int, generator: torch.Generator | None,
                processors: Sequence[LogitsProcessor] = ()) -> tuple[list[list[int]], list[list[float]], list[str]]:
    """Sample up to ``max_new_tokens`` per row; returns ids, raw log-probs, finish reasons."""
    B = input_ids.shape[0]
    toks, lps = [], []
    logits = step.start(input_ids, attention_mask)
    dev = logits.device  # the step's device (a GPU model's logits stay there)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(params.max_new_tokens):
        raw_lp = torch.log_softmax(logits, dim=-1)
        scores = logits
        for proc in processors:
            scores = proc(torch.stack(toks, 1) if toks else input_ids[:, :0], scores)
        if params.greedy:
            tok = scores.argmax(-1)
        else:
            scores = filter_logits(scores / params.temperature, params.top_k, params.top_p)
            probs = scores.softmax(-1)
            if generator is not None and generator.device != probs.device:  # a generator samples on its device
                tok = torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(-1).to(dev)
            else:
                tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        toks.append(tok)
        lps.append(raw_lp.gather(-1, tok[:, None]).squeeze(-1))
        if params.stop_on_eos:
            done |= torch.isin(tok, eos)
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        logits = step.advance(tok)
    tok_m, lp_m = torch.stack(toks, 1).tolist(), torch.stack(lps, 1).tolist()
    ids_out, lps_out, reasons = [], [], []
    eos_set = set(int(e) for e in eos_ids)
    for i in range(B):
        ids, lp = tok_m[i], lp_m[i]
        end = next((j for j, x in enumerate(ids) if x in eos_set), None) if params.stop_on_eos else None
        if end is not None:
            ids, lp, reason = ids[: end + 1], lp[: end + 1], "stop"
        else:
            reason = "length"
        ids_out.append(ids)
        lps_out.append(lp)
        reasons.append(reason)
    return ids_out, lps_out, reasons


class HFEngine:
    """Generation with a transformers model; see :func:`sample_loop`.

    ``decoder`` builds the per-call :class:`StepModel` (default: the plain
    model with its KV cache), which is how DeRa/VAS/Q-Adapter plug in.
    """

    name = "hf"

    def __init__(self, model, tokenizer, *, batch_size: int = 32,
                 decoder: Callable[[object], StepModel] | None = None,
                 processors: Sequence[LogitsProcessor] = ()) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.decoder = decoder or CausalLMStep
        self.processors = list(processors)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = eos_token_ids(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: str = "float32", trust_remote_code: bool = False,
                        device: str | None = None, **kw) -> "HFEngine":
        """``device``: default the first GPU this process sees (a Ray actor: the one it was given), else CPU."""
        from rlcustom.models.heads import default_device
        from rlcustom.models.loading import load_causal_lm, load_tokenizer

        model = load_causal_lm(name, dtype=dtype, trust_remote_code=trust_remote_code).to(default_device(device))
        return cls(model, load_tokenizer(name, trust_remote_code=trust_remote_code), **kw)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams,
                 decoder: Callable[[object], StepModel] | None = None,
                 processors: Sequence[LogitsProcessor] | None = None) -> Rollouts:
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        gen = torch.Generator(self.device).manual_seed(params.seed) if params.seed is not None else None
        rows = [(i, ids) for i, ids in enumerate(prompt_ids) for _ in range(params.n)]
        out = Rollouts([], [], [], [], [], [], [])
        make_step = decoder or self.decoder
        procs = self.processors if processors is None else list(processors)
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s : s + self.batch_size]
            ids, attn = left_pad([r[1] for r in chunk], self.pad_id)
            r_ids, r_lps, reasons = sample_loop(make_step(self.model), ids, attn, params, self.eos_ids,
                                                self.pad_id, gen, procs)
            out.prompt_ids += [r[1] for r in chunk]
            out.response_ids += r_ids
            out.logprobs += r_lps
            out.finish_reasons += reasons
            out.prompt_index += [r[0] for r in chunk]
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        if prompts and isinstance(prompts[0], str):
            out.prompts = [prompts[i] for i in out.prompt_index]  # type: ignore[index]
        return out


def encode_prompts(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Text -> token ids the same way for every engine (so they agree token for token)."""
    if not prompts:
        return []
    if isinstance(prompts[0], str):
        enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return [list(e) for e in enc]
    return [list(map(int, p)) for p in prompts]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, L - len(s):] = torch.tensor(s, dtype=torch.long)
            attn[i, L - len(s):] = 1
    return ids, attn


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # a model without parameters (a stand-in)
        return torch.device("cpu")


def eos_token_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (gen_eos, tokenizer.eos_token_id):
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(int(x) for x in e)
    return sorted(ids)
