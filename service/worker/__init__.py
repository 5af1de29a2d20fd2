"""The engine worker process (:mod:`.main`): what runs on the other side of the pool's sockets.

Importing this package imports nothing heavy; JAX starts in the child, in :func:`.main.main`.
"""
