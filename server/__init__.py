"""The fedcl ServerApp."""
