"""`python -m beam_pipeline.report OUTPUT_DIR`: the command line, main in __init__.py."""

import sys

from beam_pipeline.report import main

if __name__ == "__main__":
    sys.exit(main())
