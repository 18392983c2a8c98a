"""The lab: the demo, the scenarios (drift, learn, onboarding, soak, ...) and the benchmarks. Run
from a checkout (`python -m benchmarks ...` or the make targets); the product never imports it."""
