"""The Prophet forecaster: expected usage per meter, written to the compacted forecasts topic.

``wattsup forecast run|schedule|evaluate``; see the README section "Forecasting".
"""
