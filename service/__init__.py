"""gradserve's HTTP service: FastAPI over a pool of engine worker processes."""
