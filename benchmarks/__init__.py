"""facesdk benchmark harness (import package ``facesdk_bench``)."""
