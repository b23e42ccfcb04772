"""The Helm chart, rendered and linted with real Helm (helm-python-sdk), the images and the examples."""
