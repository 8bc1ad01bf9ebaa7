"""Running the worker under systemd: the notify protocol (`notify`), the unit file and its
installer (`install`, `logllm-enricher.service`, `gpu.conf`), and `logllm systemd install`
(`commands`)."""
