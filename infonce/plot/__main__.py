import sys

from infonce.plot.cli import main

sys.exit(main())
