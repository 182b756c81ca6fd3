"""Load tests with Locust: `make load` (headless) and `make load-ui` (the web UI)."""
