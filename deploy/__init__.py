"""Renders the docker compose and Kubernetes deployments from the topology
(services/runtime/topology.py), so every target runs the same services on the same ports
with the same settings. deploy/render.py writes them into deploy/."""
