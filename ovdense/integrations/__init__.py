"""Adapters to other frameworks, imported only by their users.

Nothing in the rest of ovdense imports this package (``tests/test_import_graph.py`` checks it),
so the core never needs the frameworks installed. ``ovdense.integrations.mmseg``: ovdense
segmentors inside mmsegmentation 1.x (needs mmcv 2.x, mmengine and mmsegmentation).
"""
