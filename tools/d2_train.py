"""detectron2's trainer on an ovdense LazyConfig (needs detectron2; see README.md).

    python tools/d2_train.py --config-file fvit_shapes
    python tools/d2_train.py --config-file fvit_vitb16_ovcoco --num-gpus 8
    python tools/d2_train.py --config-file fvit_shapes --eval-only train.init_checkpoint=...

Thin wrapper around :func:`ovdense.integrations.detectron2.train_net.main`.
"""

import sys

from ovdense.integrations.detectron2.train_net import main

if __name__ == "__main__":
    sys.exit(main())
