"""The anomaly detector: training, versioned artifacts and hot reload."""
