"""The preference-loss kinds as one table: what each computes and what it needs.

One row (``LossSpec``) per ``loss.kind``. Everything that depends on the kind reads this
table and nothing else: the config's choices and ``needs_margin`` / ``needs_reference``
(``dpo/config.py``), the objective (``dpo/objective.py``), the per-pair report of the
train-dpo stage (``dpo/report.py``) and the table in docs/GUIDE.md (a doc test keeps
it in step). Adding a kind = its loss function, its row here, its test.

A row's ``loss`` takes the step's ``PairLogps`` (per-pair tensors), the ``LossConfig``
and the running ``LossState`` and returns ``LossOut`` (per-pair losses, the beta each
pair got, the implicit rewards for the step metrics). ``pair_beta`` is the per-pair
beta known before training (a function of the config and the margins only), used by
the loss itself and by the report, so it is computed by one function; it is None for
the kinds whose beta depends on the policy's own margins step by step (beta-DPO, the
implicit-reward beta): their report says so (NaN and the rule) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmrlhf_ray.dpo import losses as L

if TYPE_CHECKING:  # the config imports this table; the table only names the type
    from mmrlhf_ray.dpo.config import LossConfig


@dataclass
class LossState:
    """Running statistics some baselines keep between steps (beta-DPO, MPO)."""

    implicit_margin_mean: float = 0.0  # beta-DPO / implicit-reward beta: M_0
    reward_shift: float = 0.0  # MPO quality loss: running mean of the rewards
    steps: int = 0


@dataclass
class PairLogps:
    """One step's pairs: summed log-probs (P,), token counts (P,), margins (P,)."""

    pc: Tensor  # policy log pi(y_w|x), summed over tokens
    pr: Tensor  # policy log pi(y_l|x)
    nc: Tensor  # tokens of y_w (>= 1)
    nr: Tensor  # tokens of y_l (>= 1)
    rc: Tensor | None = None  # reference log pi_ref(y_w|x); None for reference-free kinds
    rr: Tensor | None = None
    margins: Tensor = field(default_factory=lambda: torch.zeros(0))  # delta, NaN if absent

    def h(self) -> Tensor:
        """The log-ratio difference h of every pair, detached."""
        return L.log_ratio_difference(self.pc, self.pr, self.rc, self.rr).detach()


@dataclass
class LossOut:
    """Per-pair losses (P,), the beta each pair got (P,), implicit rewards (P,) each."""

    losses: Tensor
    beta: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


@dataclass(frozen=True)
class LossSpec:
    """One loss kind: its loss, what it needs, and the beta a pair gets."""

    kind: str
    paper: str  # where it comes from (for the GUIDE)
    loss: Callable[[PairLogps, LossConfig, LossState], LossOut]
    beta_rule: str  # the per-pair beta, in words (the GUIDE's and the report's column)
    pair_beta: Callable[[LossConfig, Tensor], Tensor] | None
    margin: bool = False  # uses the reward margin delta (when loss.w > 0)
    reference: bool = True  # needs pi_ref log-probs
    sft_weight: Callable[[LossConfig], float] = lambda cfg: cfg.sft_weight
    sft_key: str = "loss.sft_weight"  # the key the SFT weight comes from (GUIDE)
    pairs: str = "pairs"  # the pair construction it is meant for (GUIDE)

    def needs_margin(self, cfg: LossConfig) -> bool:
        return self.margin and cfg.w > 0


# ---- per-pair beta known before training ------------------------------------------------
def mm_dpo_beta(cfg: LossConfig, margins: Tensor) -> Tensor:
    """beta(delta) of Dynamic Reward Scaling; with w = 0 (or no margins needed) beta_ori."""
    if not (cfg.w > 0):
        return torch.full_like(margins, cfg.beta_ori, dtype=torch.float32)
    return L.dynamic_beta(margins, cfg.beta_ori, cfg.w, cfg.k)


def constant_beta(name: str) -> Callable[[LossConfig, Tensor], Tensor]:
    """The per-pair beta of a kind with one fixed beta: the config field ``name``."""

    def beta(cfg: LossConfig, margins: Tensor) -> Tensor:
        return torch.full_like(margins, float(getattr(cfg, name)), dtype=torch.float32)

    beta.__doc__ = f"loss.{name} for every pair"
    return beta


# ---- the losses -----------------------------------------------------------------------
def _dpo_with(p: PairLogps, beta: Tensor) -> LossOut:
    losses, cr, rj = L.dpo_loss(p.pc, p.pr, p.rc, p.rr, beta.to(p.pc.dtype))
    return LossOut(losses, beta, cr, rj)


def mm_dpo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    return _dpo_with(p, mm_dpo_beta(cfg, p.margins))


def dpo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    return _dpo_with(p, constant_beta("beta_ori")(cfg, p.pc.detach()))


def beta_dpo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    beta, state.implicit_margin_mean = L.beta_dpo_beta(
        p.h(), state.implicit_margin_mean, cfg.beta_ori, cfg.beta_dpo_alpha
    )
    return _dpo_with(p, beta)


def implicit_reward(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    h = p.h()
    beta = L.implicit_reward_beta(h, state.implicit_margin_mean, cfg.beta_ori, cfg.beta_dpo_alpha)
    state.implicit_margin_mean = 0.9 * state.implicit_margin_mean + 0.1 * float(
        (cfg.beta_ori * h).mean()
    )
    return _dpo_with(p, beta)


def mpo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    out = dpo(p, cfg, state)
    wp, wq, _ = cfg.mpo_weights
    beta = out.beta.to(p.pc.dtype)
    q = L.mpo_quality_loss(beta * (p.pc - p.rc), beta * (p.pr - p.rr), state.reward_shift)
    rewards = torch.cat([out.chosen_rewards, out.rejected_rewards])
    state.reward_shift = 0.9 * state.reward_shift + 0.1 * float(rewards.mean())
    out.losses = wp * out.losses + wq * q
    return out


def ipo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    nc, nr = p.nc, p.nr
    losses = L.ipo_loss(p.pc / nc, p.pr / nr, p.rc / nc, p.rr / nr, cfg.ipo_tau)
    beta = constant_beta("ipo_tau")(cfg, p.pc.detach())
    return LossOut(losses, beta, (p.pc - p.rc).detach() / nc, (p.pr - p.rr).detach() / nr)


def simpo(p: PairLogps, cfg: LossConfig, state: LossState) -> LossOut:
    ac, ar = p.pc / p.nc, p.pr / p.nr
    losses = L.simpo_loss(ac, ar, cfg.simpo_beta, cfg.simpo_gamma)
    beta = constant_beta("simpo_beta")(cfg, p.pc.detach())
    return LossOut(losses, beta, (cfg.simpo_beta * ac).detach(), (cfg.simpo_beta * ar).detach())


# ---- the table --------------------------------------------------------------------------
LOSS_SPECS: dict[str, LossSpec] = {
    s.kind: s
    for s in (
        LossSpec(
            "mm_dpo", "MM-RLHF Sec. 4.2", mm_dpo, "β(δ) = β_ori (1 + w (1 − e^(−kδ)))",
            mm_dpo_beta, margin=True,
        ),
        LossSpec("dpo", "Rafailov et al. 2023", dpo, "β_ori", constant_beta("beta_ori")),
        LossSpec("ipo", "Azar et al. 2023", ipo, "ipo_tau", constant_beta("ipo_tau")),
        LossSpec(
            "simpo", "Meng et al. 2024", simpo, "simpo_beta (no reference)",
            constant_beta("simpo_beta"), reference=False,
        ),
        LossSpec(
            "beta_dpo", "Wu et al. 2024a", beta_dpo,
            "one β per batch from the policy's implicit margins", None,
        ),
        LossSpec(
            "mpo", "Wang et al. 2024b", mpo, "β_ori", constant_beta("beta_ori"),
            sft_weight=lambda cfg: cfg.mpo_weights[2], sft_key="loss.mpo_weights[2]",
        ),
        LossSpec(
            "implicit_reward", "MM-RLHF Fig. 11(a)", implicit_reward,
            "per pair from the policy's implicit margin", None,
        ),
        LossSpec(
            "mia_dpo", "Liu et al. 2024b", dpo, "β_ori", constant_beta("beta_ori"),
            pairs="pairs mia_distractors=3 (grid collages)",
        ),
    )
}  # fmt: skip
LOSS_KIND_NAMES: tuple[str, ...] = tuple(LOSS_SPECS)


def loss_spec(kind: str) -> LossSpec:
    """The row of ``kind``; a clear error naming the known kinds otherwise."""
    try:
        return LOSS_SPECS[kind]
    except KeyError:
        raise ValueError(
            f"loss.kind: {kind!r} is not one of {', '.join(LOSS_KIND_NAMES)}"
        ) from None


def guide_rows() -> list[dict[str, Any]]:
    """The GUIDE's loss table, one dict per kind (what the doc test compares)."""
    return [
        {
            "kind": s.kind,
            "from": s.paper,
            "β per pair": s.beta_rule,
            "margin δ": "when w > 0" if s.margin else "no",
            "reference": "yes" if s.reference else "no",
            "pairs": s.pairs,
            "SFT weight": s.sft_key,
        }
        for s in LOSS_SPECS.values()
    ]
