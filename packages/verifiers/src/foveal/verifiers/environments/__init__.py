"""The built-in environments, each registered under `foveal.environments` by its module's `load_environment`:
`shapes` (pillow scenes), `charts` (matplotlib charts) and `arithmetic` (text only)."""
