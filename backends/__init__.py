"""Built-in facesdk backends (import package ``facesdk_backends``).

Each sub-package is one backend with the same shape: ``backend.py`` (the
Backend/Session classes; imports its engine lazily) and ``plugin.py`` (the
entry point with the ``facesdk_backends`` hook).
"""
