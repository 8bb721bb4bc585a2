"""`python -m estcoap.cli`: the same as the `estcoap` command."""

import sys

from . import main

sys.exit(main())
