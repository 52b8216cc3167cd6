"""loradock: a Hugging Face Hub-integrated registry and serving system for LoRA adapters.

The parts install as sub-packages: ``loradock.registry`` (the ground floor),
``loradock.training``, ``loradock.serving``, ``loradock.evals`` and ``loradock.spaces``.
This top package is thin: settings, errors, model-loading helpers and the CLI.
"""

__version__ = "0.1.0"
