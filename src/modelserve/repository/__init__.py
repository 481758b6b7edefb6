"""The model repository: configs, versions, loading and the lifecycle of loaded versions."""
