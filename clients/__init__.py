"""The hospital ClientApp."""
