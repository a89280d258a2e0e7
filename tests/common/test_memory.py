"""tune_malloc applies its thresholds on glibc (this project's Linux targets) and never fails elsewhere."""

import platform

import pytest

from tunescout.common.memory import tune_malloc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_thresholds_are_accepted_on_glibc():
    assert tune_malloc() is True
