"""The implementations of the built-in components, imported only when a pipeline uses one
(the plugin modules in :mod:`pipectl.builtins` only register factories)."""
