"""Deployment: the docker compose topology and the same processes run locally.

- :mod:`fedcl.deploy.topology`: the services and their flags (the single source of
  truth), rendered to ``docker-compose.yml``;
- :mod:`fedcl.deploy.certs`: a throwaway CA and server certificate for TLS;
- :mod:`fedcl.deploy.local`: ``fedcl deploy local``, the topology as local processes.
"""
