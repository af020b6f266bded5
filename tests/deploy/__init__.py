"""Offline checks of the deployment files: compose, Kubernetes, Render, the images and .env.example."""
