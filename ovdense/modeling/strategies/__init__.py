"""Last-block attention strategies: how a CLIP image tower's final block turns tokens into dense
features.

Every training-free dense-CLIP method of the MaskCLIP / SCLIP / ClearCLIP / NACLIP / ProxyCLIP
family changes only the last transformer block. Each is an :class:`AttentionStrategy` in its own
file, registered in :data:`STRATEGIES`; the CLIP model is never copied or patched. Formulas
(``s = head_dim ** -0.5``; q, k, v from the block's input projection of ``ln_1(x)``):

=========== ============================================== =========================
strategy    attention weights A                            residual + FFN kept?
=========== ============================================== =========================
vanilla     softmax(q kᵀ s)                                yes
maskclip    identity (output = out_proj(v))                yes
catseg      identity (output = out_proj(v))                CLS token's residual + FFN
sclip       softmax(q qᵀ s) + softmax(k kᵀ s)              yes
clearclip   softmax(q qᵀ s)                                no: output = out_proj(A v)
naclip      softmax(k kᵀ s + Ω), Ω Gaussian                no
proxy       softmax of a VFM's thresholded patch affinity  no (output on the VFM grid)
resclip     a base's terms reshaped by intermediate q-k    the base's
            attention (RCS) and semantic feedback (SFR)
scclip      (softmax of mid-layer similarity + softmax(k   no (anomaly tokens resolved,
            kᵀ s)) / 2                                     mid-layer aggregation, fusion)
corrclip    softmax(τ VFM affinity) within class-agnostic  no (spatial + semantic
            masks (scope) and above the mean elsewhere     branches fused, VFM grid)
=========== ============================================== =========================

Adding a method (GEM, ...) is one subclass implementing :meth:`AttentionStrategy.attend`
registered with ``@STRATEGIES.register("name")`` (which also sets its ``name``); the contract
tests (``tests/modeling/test_registries.py``) then run it on every tower.
"""

from .base import (
    REGIONS,
    STRATEGIES,
    TEXT_EMBEDS,
    AttentionBlock,
    AttentionStrategy,
    TokenContext,
    build_strategy,
    list_strategies,
    merge_heads,
    split_qkv,
)
from .catseg import CATSegAttention
from .clearclip import ClearCLIPAttention
from .corrclip import CorrCLIPAttention
from .maskclip import MaskCLIPAttention
from .naclip import NACLIPAttention, gaussian_window_bias
from .proxy import ProxyAttention, proxy_affinity
from .resclip import ResCLIPAttention
from .scclip import SCCLIPAttention
from .sclip import SCLIPAttention
from .vanilla import VanillaAttention

__all__ = [
    "REGIONS",
    "STRATEGIES",
    "TEXT_EMBEDS",
    "AttentionBlock",
    "AttentionStrategy",
    "CATSegAttention",
    "ClearCLIPAttention",
    "CorrCLIPAttention",
    "MaskCLIPAttention",
    "NACLIPAttention",
    "ProxyAttention",
    "ResCLIPAttention",
    "SCCLIPAttention",
    "SCLIPAttention",
    "TokenContext",
    "VanillaAttention",
    "build_strategy",
    "gaussian_window_bias",
    "list_strategies",
    "merge_heads",
    "proxy_affinity",
    "split_qkv",
]
