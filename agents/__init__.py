"""What runs in a worker, one entry point per stage; app/worker.py registers them."""
