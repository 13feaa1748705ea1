"""Real-time serving of a registered model with no scoring code: the local scoring server
and Azure ML managed online deployment specs."""
