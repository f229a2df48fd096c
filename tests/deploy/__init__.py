"""The deployment in platform/: its images (Dockerfile), its settings list (env.example) and its compose
stack, started process by process on loopback (no container engine runs on these machines)."""
