"""Prepared datasets, the loader that keeps them on the device, and the sources they are downloaded from."""
