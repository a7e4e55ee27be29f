"""Constants shared by the SAM tests (a uniquely named module: ``tests/*/conftest.py`` files
share the module name ``conftest``, so tests import from here, not from a conftest)."""

#: A scene of the shapes world whose ground-truth masks the tiny CLIP labels right with
#: mask pooling (checked in test_sam_instances.py).
OBJECTS = ["red circle", "blue square", "green triangle"]
