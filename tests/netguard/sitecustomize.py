"""Installs the test network guard in child processes of the test run (see netguard.py)."""

import os

if os.environ.get("DYNAMIND_TEST_NETGUARD"):
    import netguard

    netguard.install(os.environ["DYNAMIND_TEST_NETGUARD"])
