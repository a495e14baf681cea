"""C{python -m backtracweb}: the same as the C{backtracweb} command."""

import sys

from backtracweb.cli import main

sys.exit(main())
