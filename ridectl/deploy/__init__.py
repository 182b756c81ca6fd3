"""Renders the docker compose and Kubernetes deployments from the topology
(services/shared/topology.py), so every target runs the same services on the same ports
with the same settings. scripts/render_deploy.py writes them into deploy/."""
