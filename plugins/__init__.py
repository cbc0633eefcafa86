"""Optional facesdk plugins (import package ``facesdk_plugins``): gallery stores and more."""
