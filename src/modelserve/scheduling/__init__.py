"""Admission, queues and execution: who runs when, and on which runtime instance."""
