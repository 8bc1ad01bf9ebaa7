"""Training and evaluation of the detectors on public benchmarks and on users' own logs."""
