"""mmseg's test loop on an ovdense mmseg config (needs mmsegmentation; see README.md).

    python tools/mmseg_test.py naclip_voc21 --data-root /data
    python tools/mmseg_test.py path/to/config.py --cfg-options model.preset=sclip

Thin wrapper around :func:`ovdense.integrations.mmseg.runner.main`.
"""

import sys

from ovdense.integrations.mmseg.runner import main

if __name__ == "__main__":
    sys.exit(main())
