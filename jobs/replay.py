"""Ray job entrypoint: `ray job submit --working-dir . -- python -m jobs.replay TRACE --out DIR ...`.

Takes the options of `matcher replay`; all logic lives in the library.
"""

import sys

from matcher.cli import main

if __name__ == "__main__":
    sys.exit(main(["replay", *sys.argv[1:]]))
