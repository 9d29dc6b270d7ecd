"""``python -m fcgi_lua``: the same as the ``fcgi-lua`` command."""

import sys

from fcgi_lua.cli import main

sys.exit(main())
