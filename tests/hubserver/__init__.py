"""A small Hugging Face Hub API server for tests: huggingface_hub talks to it over real HTTP.

Use the ``hub_server`` fixture (``pytest_plugins = ["hubserver.fixtures"]``) or
``HubServer(folder)`` directly; it stores repos in a temporary folder.
"""

from .server import PAGE_SIZE, READ_TOKEN, WRITE_TOKEN, HubServer

__all__ = ["PAGE_SIZE", "HubServer", "READ_TOKEN", "WRITE_TOKEN"]
