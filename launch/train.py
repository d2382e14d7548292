"""``deepspeed --num_gpus N launch/train.py --deepspeed_config configs/neuzip_zero.json`` (see nzdist.launch.train)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from nzdist.launch.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
