"""Thin entry point: `python train.py --config configs/meld_text.py [--config.x=y ...]` = `emohd train`."""

import sys

from emohd_jax.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
