"""``python -m stepdown_ml`` runs the command line."""

import sys

from stepdown_ml.cli import main

sys.exit(main())
