"""The contract between the operator and the model server.

The two never share a process; they share these names. Each side imports them
from here instead of retyping them, so a rename breaks loudly at import time.
"""
