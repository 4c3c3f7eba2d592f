import sys

from xlb.cli import main

sys.exit(main())
