"""RewardActor: scores rollouts with a Python rule, a model, or an HTTP endpoint.

``spec`` picks the kind:

* a registered reward name (``"length_tokens"``, ``"politeness"``, ... see
  :mod:`rlcustom.rewards`) or ``"module.path:function"``: a Python function
  called once per sample as ``fn(prompt, completion, response_ids=..., **row_fields, **kwargs)``
  (``row_fields``: the prompt record's other columns, e.g. ``answer``);
* ``"model"``: a Bradley-Terry :class:`~rlcustom.models.heads.RewardModel`
  directory (``model_path``, written by ``RewardModel.save``), read at the last
  token of prompt + response;
* ``"loglik"``: the length-normalised log-likelihood of the response under the
  causal LM ``model_path``, ``(1/|y|) sum_t log p(y_t | x, y_<t)`` -- the reward
  L3M uses for its preference reward models (App. A.1, "set the reward to be its
  length-normalized log-likelihood"; length normalisation as in its Sec. 5);
* ``"http"``: an endpoint at ``url`` (:class:`rlcustom.rewards.http.HTTPRewardClient`;
  ``http_opts``: ``timeout_s``, ``max_retries``, ``backoff_s``, ``max_backoff_s``,
  ``jitter``, ``max_batch``, ``max_in_flight``, ``api_key_env``, ``headers``).

Model kinds score token ids as generated (so the scorer must share the policy's
tokenizer) unless ``retokenize=True``, which re-encodes prompt and completion
text with the scorer's own tokenizer. Python and HTTP kinds need text: they use
``Rollouts.texts``/``Rollouts.prompts`` and decode token ids with
``tokenizer_path`` where those are missing (prompts keep their special tokens,
completions drop them, as the engines do).
"""
from __future__ import annotations

from typing import Any

import torch

from rlcustom.actors.base import ActorBase
from rlcustom.engines.base import Rollouts
from rlcustom.models.heads import default_device, micro_batches, trim_batch
from rlcustom.rewards import RewardFunctionError, apply_reward, check_reward_value, resolve_reward

HTTP_OPTS = ("timeout_s", "max_retries", "backoff_s", "max_backoff_s", "jitter", "max_batch", "max_in_flight",
             "api_key_env", "headers")
MODEL_KINDS = ("model", "loglik")
MODEL_KWARGS = ("retokenize", "micro_batch_size", "dtype")


class RewardActor(ActorBase):
    role = "reward"

    def __init__(self, spec: str, *, model_path: str | None = None, url: str | None = None,
                 tokenizer_path: str | None = None, kwargs: dict | None = None, seed: int = 0, rank: int = 0,
                 num_threads: int | None = None, dtype: str = "float32", micro_batch_size: int = 16,
                 trust_remote_code: bool = False, retokenize: bool = False, device: str | None = None,
                 **http_opts: Any) -> None:
        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        unknown = sorted(set(http_opts) - set(HTTP_OPTS))
        if unknown:
            raise TypeError(f"RewardActor: unknown option(s) {', '.join(unknown)} "
                            f"(HTTP options: {', '.join(HTTP_OPTS)})")
        self.spec = spec
        self.kwargs = dict(kwargs or {})
        self.tokenizer_path = tokenizer_path
        self.model_path = model_path
        self.trust_remote_code = trust_remote_code
        self._tokenizer = None
        self._scorer_tok = None
        self.retokenize = bool(retokenize)
        self.micro_batch_size = int(micro_batch_size)
        self.model = None
        self.client = None
        self.device = device
        if spec == "http":
            self.kind = "http"
            if not url:
                raise ValueError("reward 'http': needs url (reward.url)")
            from rlcustom.rewards.http import HTTPRewardClient

            self.client = HTTPRewardClient(url, seed=seed, **{k: v for k, v in http_opts.items() if v is not None})
        elif spec in MODEL_KINDS:
            self.kind = spec
            if not model_path:
                raise ValueError(f"reward {spec!r}: needs model_path (reward.model_path)")
            bad = sorted(set(self.kwargs) - set(MODEL_KWARGS))
            if bad:
                raise ValueError(f"reward {spec!r}: unknown kwargs {', '.join(bad)} "
                                 f"(allowed: {', '.join(MODEL_KWARGS)})")
            dtype = self.kwargs.get("dtype", dtype)
            self.micro_batch_size = int(self.kwargs.get("micro_batch_size", micro_batch_size))
            self.retokenize = bool(self.kwargs.get("retokenize", retokenize))
            self._load_model(spec, model_path, dtype)
        else:
            self.kind = "python"
            self.fn = resolve_reward(spec)  # fails now, naming the spec, rather than at the first score()
        if self.kind in ("python", "http") and tokenizer_path is not None:
            self._policy_tokenizer()  # now, while the other roles start, not inside the first step's score phase

    # -- setup -----------------------------------------------------------------
    def _load_model(self, spec: str, path: str, dtype: str) -> None:
        from pathlib import Path

        from rlcustom.models.heads import HEAD_CONFIG, RewardModel
        from rlcustom.models.loading import load_causal_lm

        if spec == "model":
            if not (Path(path).expanduser() / HEAD_CONFIG).is_file():
                raise ValueError(f"reward 'model': {path} is not a reward-model directory (no {HEAD_CONFIG}); "
                                 "train one (RewardModel.save) or use spec 'loglik' for a plain causal LM")
            self.model = RewardModel.load(path, dtype=dtype, trust_remote_code=self.trust_remote_code)
        else:
            self.model = load_causal_lm(path, dtype=dtype, trust_remote_code=self.trust_remote_code)
        self.model.to(default_device(self.device)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg = self.model.config
        self.pad_id = next((int(x) for x in (getattr(cfg, "pad_token_id", None), getattr(cfg, "eos_token_id", None))
                            if isinstance(x, int)), 0)

    def _policy_tokenizer(self):
        """Decodes rollout token ids to text: the policy's tokenizer (``tokenizer_path``)."""
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise ValueError(f"reward {self.spec!r}: the rollouts carry no text and no tokenizer_path was given "
                                 "to decode their token ids")
            from rlcustom.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_path, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def _scorer_tokenizer(self):
        """Encodes text for the scoring model (``retokenize``): the reward model's saved tokenizer or the LM's."""
        if self._scorer_tok is None:
            tok = getattr(self.model, "tokenizer", None)
            if tok is None and self.kind == "loglik":
                from rlcustom.models.loading import load_tokenizer

                tok = load_tokenizer(self.model_path, trust_remote_code=self.trust_remote_code)
            if tok is None:
                raise ValueError(f"reward {self.spec!r}: retokenize needs the reward model saved with its tokenizer "
                                 f"({self.model_path})")
            self._scorer_tok = tok
        return self._scorer_tok

    def texts(self, rollouts: Rollouts) -> tuple[list[str], list[str]]:
        """(prompt texts, completion texts): from the rollouts, decoded from ids where missing."""
        n = len(rollouts)
        if len(rollouts.prompts) == n:
            prompts = list(rollouts.prompts)
        else:
            prompts = self._policy_tokenizer().batch_decode(rollouts.prompt_ids, skip_special_tokens=False)
        if len(rollouts.texts) == n:
            completions = list(rollouts.texts)
        else:
            completions = self._policy_tokenizer().batch_decode(rollouts.response_ids, skip_special_tokens=True)
        return prompts, completions

    # -- scoring ---------------------------------------------------------------
    def score(self, rollouts: Rollouts) -> list[float]:
        """One finite float per sample, in order; failures name the reward and the sample index."""
        if len(rollouts) == 0:
            return []
        if self.kind == "python":
            prompts, completions = self.texts(rollouts)
            return apply_reward(self.fn, prompts, completions, rollouts.response_ids, self.kwargs, name=self.spec,
                                fields=rollouts.fields or None)
        if self.kind == "http":
            prompts, completions = self.texts(rollouts)
            return self.client.score(prompts, completions, kwargs=self.kwargs or None)
        return self._score_model(rollouts)

    def score_details(self, rollouts: Rollouts) -> dict[str, list]:
        """:meth:`score` plus each sample's failure reason and parts (``rlcustom.rewards.details``)."""
        if self.kind != "python" or len(rollouts) == 0:
            return {"scores": self.score(rollouts), "reasons": [], "parts": []}
        from rlcustom.rewards.details import score_details

        prompts, completions = self.texts(rollouts)
        return score_details(self.fn, prompts, completions, rollouts.response_ids, self.kwargs, name=self.spec,
                             fields=rollouts.fields or None)

    @torch.no_grad()
    def _score_model(self, rollouts: Rollouts) -> list[float]:
        if self.retokenize:
            prompts, completions = self.texts(rollouts)
            tok = self._scorer_tokenizer()
            p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
            r_ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
            rollouts = Rollouts(p_ids, r_ids, [[0.0] * len(r) for r in r_ids], list(rollouts.finish_reasons),
                                list(rollouts.prompt_index))
        if self.kind == "loglik":
            for i, r in enumerate(rollouts.response_ids):
                if not r:
                    raise RewardFunctionError(f"reward 'loglik' failed on sample {i}: empty response "
                                              "(the length-normalised log-likelihood is undefined)")
        batch = rollouts.padded(self.pad_id)
        device = next(self.model.parameters()).device
        out = torch.zeros(len(rollouts), dtype=torch.float32)
        for rows, mb in micro_batches(batch, self.micro_batch_size):
            mb, t_keep = trim_batch(mb)
            mb = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in mb.items()}
            if self.kind == "model":
                out[rows] = self.model(mb["input_ids"], mb["attention_mask"]).float().cpu()
            else:
                from rlcustom.models.forward import response_logprobs

                lp = response_logprobs(self.model, mb).float()
                n = mb["response_mask"].sum(-1).clamp(min=1)
                out[rows] = (lp.sum(-1) / n).cpu()
        return [check_reward_value(v, self.spec, i) for i, v in enumerate(out.tolist())]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
