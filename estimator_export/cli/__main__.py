"""`python -m estimator_export.cli ...` runs the `estimator-export` command."""
import sys

from estimator_export.cli import main

sys.exit(main())
