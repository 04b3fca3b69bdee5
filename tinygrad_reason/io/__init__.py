"""Files: atomic writes (atomic.py), safetensors read and write (safetensors.py), and training
checkpoints that survive a crash and resume bit-identically (checkpoint.py)."""
