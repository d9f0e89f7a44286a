"""Analyses over the warehouse: RFM scores and segments, predictive CLV (`clv`)."""
