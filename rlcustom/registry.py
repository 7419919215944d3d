"""Name -> callable registries, so a user adds a loss, an advantage estimator,
a reward or a trainer without editing any loop (as verl's ``register_adv_est``).

    from rlcustom.registry import ADV_ESTIMATORS
    @ADV_ESTIMATORS.register("my_adv")
    def my_adv(*, token_rewards, values, mask, scores, group_ids, gamma, lam): ...

The built-ins are registered by importing :mod:`rlcustom.builtins` (one list).
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of callables; unknown names fail with a close-match hint."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and not override and self._items[name] is not obj:
                raise KeyError(f"{self.kind} {name!r} is already registered (pass override=True to replace it)")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


ADV_ESTIMATORS: Registry = Registry("advantage estimator")
KL_ESTIMATORS: Registry = Registry("KL estimator")
REWARDS: Registry = Registry("reward function")
TRAINERS: Registry = Registry("trainer")
DECODERS: Registry = Registry("decoder")
# Environments of multi-turn rollouts (rlcustom.envs): name -> class or factory(**kwargs) -> environment.
ENVIRONMENTS: Registry = Registry("environment")
# Learner objectives, the one table of losses: fn(model, batch: dict[str, Tensor], **kwargs) -> (loss, stats).
# They run inside a LearnerActor/ValueActor and do their own forward pass; ``fn.loss`` is the pure
# function of rlcustom.algos they apply (None when the objective is its own math).
OBJECTIVES: Registry = Registry("objective")


def register_objective(name: str, *, loss: Callable | None = None, weighting: str | None = None,
                       override: bool = False) -> Callable[[T], T]:
    """``@register_objective("ppo_clip", loss=ppo_policy_loss)``; ``weighting="rows"`` for sequence-level losses
    (micro-batches then weigh by rows, not tokens)."""

    def deco(fn: T) -> T:
        fn.loss = loss  # type: ignore[attr-defined]
        if weighting is not None:
            fn.weighting = weighting  # type: ignore[attr-defined]
        return OBJECTIVES.register(name, override=override)(fn)

    return deco
