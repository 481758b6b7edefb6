"""Domain types shared by every layer: tensors, signatures, requests, errors, the clock."""
