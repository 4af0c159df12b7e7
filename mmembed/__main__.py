"""`python -m mmembed ...`: see mmembed.cli."""

import sys

from mmembed.cli import main

sys.exit(main())
