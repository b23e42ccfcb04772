"""End-to-end tests against a real Kubernetes cluster (kind or k3d): see docs/install.md."""
