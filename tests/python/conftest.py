"""pytest setup: find the built package and keep the tests hermetic.

ctest runs pytest with PYTHONPATH=<build>/python; run by hand, the tests fall back to
<repo>/build/python (`make build`).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # st_reference

try:
    import warpload  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(HERE, "..", "..", "build", "python"))

# A developer's settings file (~/.config/warpload, $WARPLOAD_CONFIG) must not steer the tests.
os.environ["XDG_CONFIG_HOME"] = os.path.join(HERE, "no-config-dir-for-tests")
os.environ["WARPLOAD_CONFIG"] = ""
