"""Compatibility re-exports: ProxyCLIP's strategy lives in
:mod:`ovdense.modeling.strategies.proxy`; import it from there."""

from ..strategies.proxy import MEAN_OVER, ProxyAttention, proxy_affinity

__all__ = ["MEAN_OVER", "ProxyAttention", "proxy_affinity"]
