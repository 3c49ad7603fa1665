"""The stage tests' shared fixtures (``tiny_data``, ``tiny_run``) live in tests/conftest.py, beside the
predict tests' use of them."""
