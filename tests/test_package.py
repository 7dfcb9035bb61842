"""Tests for tf_biggan/__init__.py: the one version number is the installed one."""

import importlib.metadata

import tf_biggan


def test_the_installed_version_is_the_packages():
    assert importlib.metadata.version("tf_biggan") == tf_biggan.__version__
