"""The tiny world's tests use the project's shared fixtures; from the repository's root, `pytest` collects them too
(testpaths), with the suite's options (tests/conftest.py)."""

pytest_plugins = ["services.testing.fixtures"]
