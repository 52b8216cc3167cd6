"""Plain helpers the tests share: functions and constants, imported as ``tests.helpers.<part>``.

Fixtures stay in the conftest files (they may import from here); tests never import a
conftest module.
"""
