#!/usr/bin/env python
"""Write one scene of the shapes world (a test/demo image for the bundled tiny CLIP).

Example (``ovdense make-shapes-scene`` runs the same code, ``ovdense.data.synthetic.main``)::

    python tools/make_shapes_scene.py --objects "red circle,blue square" --output scene.png \
        --label scene_label.png
    ovdense demo --config shapes/maskclip --input scene.png \
        --classes "red circle,blue square" --output out/

Prints the scene's caption. Without ``--objects`` the scene is drawn at random (``--seed``,
``--index``). Label values follow ``ovdense.data.synthetic.class_names()`` (0 = background).
"""

import sys

from ovdense.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
