"""The MAX7800x CNN accelerator on the host: network description, safe checkpoint reader,
bit-exact emulator, fit check, and the importer of ai8x-synthesis C projects.

Modules: :mod:`.network` (YAML + checkpoint → layers), :mod:`.checkpoint` (restricted reader of
``.pth.tar``), :mod:`.emulator` (bit-exact arithmetic), :mod:`.fit` (memory and layer limits),
:mod:`.cproject` (``cnn.c`` + ``weights.h`` → network). Import them directly; this package
imports nothing on its own.
"""
