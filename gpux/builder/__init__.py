"""Build: resolve model sources, validate, optimise, smoke-test and package into the store."""
