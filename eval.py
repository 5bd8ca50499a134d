"""Thin entry point: `python eval.py --config configs/meld_text.py [--config.x=y ...]` = `emohd eval`."""

import sys

from emohd_jax.cli import main

if __name__ == "__main__":
    main(["eval", *sys.argv[1:]])
