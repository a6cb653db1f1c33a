"""`python -m customlabels_batch.cli`, the same as the `customlabels-batch` console script."""

import sys

from customlabels_batch.cli import main

sys.exit(main())
