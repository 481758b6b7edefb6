"""What the server measures about itself: statistics (Triton's extension) now, metrics and logs later."""
