"""Turning test identities into something a test runner can consume (quarantine exports)."""

from __future__ import annotations


def pytest_node_id(class_name: str, name: str, file: str | None) -> str:
    """A pytest node id for `--deselect`, from what the JUnit report said.

    pytest's xunit2 reports have no file: `classname` is the dotted module path, optionally
    followed by the test class (`tests.test_api.TestLogin`).

    >>> pytest_node_id("tests.test_api.TestLogin", "test_ok", None)
    'tests/test_api.py::TestLogin::test_ok'
    >>> pytest_node_id("tests.test_api", "test_ok[1]", None)
    'tests/test_api.py::test_ok[1]'
    >>> pytest_node_id("tests.test_api.TestLogin", "test_ok", "tests/test_api.py")
    'tests/test_api.py::TestLogin::test_ok'
    """
    parts = class_name.split(".") if class_name else []
    classes: list[str] = []
    while parts and parts[-1][:1].isupper():
        classes.insert(0, parts.pop())
    path = file or ("/".join(parts) + ".py" if parts else "")
    return "::".join([path, *classes, name]) if path else "::".join([*classes, name])
